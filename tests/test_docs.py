"""The plugin API is documented: every hook has a heading with its exact signature in docs/plugin_hooks.md."""
from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path

from portal.jobs import JobSpec
from portal.plugins import hookspecs

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugin_hooks.md"
HEADING = re.compile(r"^#{2,4} `([^`]+)`\s*$", re.MULTILINE)


def hook_functions(module=hookspecs) -> dict[str, Callable]:
    """Return the hook specifications of a module by name."""
    return {name: func for name, func in inspect.getmembers(module, inspect.isfunction) if hasattr(func, "portal_spec")}


def signature(func: Callable) -> str:
    """Return a hook's signature as written in hookspecs.py (annotations are strings there)."""
    sig = inspect.signature(func)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{func.__name__}({params}) -> {sig.return_annotation}"


def undocumented(hooks: dict[str, Callable], text: str) -> list[str]:
    """Return the signatures of hooks with no heading of their own in the text."""
    headings = set(HEADING.findall(text))
    return sorted(signature(func) for func in hooks.values() if signature(func) not in headings)


def test_plugin_hooks_are_documented():
    assert hook_functions(), "no hooks found in hookspecs.py"
    assert undocumented(hook_functions(), DOC.read_text()) == []


def test_documented_hooks_exist():
    signatures = {signature(func) for func in hook_functions().values()}
    documented = [h for h in HEADING.findall(DOC.read_text()) if h.startswith("portal_")]
    assert [h for h in documented if h not in signatures] == []


def test_the_check_notices_an_undocumented_or_changed_hook():
    text = DOC.read_text()
    spec = signature(hookspecs.portal_startup)
    assert undocumented(hook_functions(), text.replace(f"`{spec}`", "`portal_startup`")) == [spec]
    assert undocumented(hook_functions(), text.replace("app: Flask) -> None", "app) -> None")) == [spec]


def test_every_job_spec_field_is_documented():
    text = DOC.read_text()
    missing = [f.name for f in dataclasses.fields(JobSpec) if f"`{f.name}`" not in text]
    assert missing == []
