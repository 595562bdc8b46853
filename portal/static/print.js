// The printable statement's "Print" button (kept out of inline script for a strict content security policy).
(function () {
  "use strict";
  var button = document.querySelector("[data-print]");
  if (button) { button.addEventListener("click", function () { window.print(); }); }
})();
