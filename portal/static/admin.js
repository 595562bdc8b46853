// Support admin behaviour kept out of inline handlers, for a content security policy without 'unsafe-inline':
// the "With selected" actions menu and the confirmation before deleting a record.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var action = event.target.closest("[data-model-action]");
    if (action && window.modelActions) {
      event.preventDefault();
      window.modelActions.execute(action.getAttribute("data-model-action"));
      return;
    }
    var confirmed = event.target.closest("[data-confirm]");
    if (confirmed && !window.confirm(confirmed.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });
})();
