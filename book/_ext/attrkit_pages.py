"""Pages without script errors: every inline script is written once.

sphinx-thebe adds its settings (``const THEBE_JS_URL = ...``) as an inline script while the documents are read,
after the HTML builder has copied the registered scripts. Sphinx 7.4 then copies the registered scripts again
before writing, and an inline script registered with no file name (``None``) does not compare equal to its copy
(file name ``""``), so every page declared ``THEBE_JS_URL`` twice and the browser's console reported
"Identifier 'THEBE_JS_URL' has already been declared". This extension keeps the first of equal scripts.
Enabled in _config.yml (``local_extensions``).
"""
from __future__ import annotations


def _key(script) -> tuple:
    """What makes two scripts the same: the file (None and "" alike) and the attributes, the body included."""
    return (script.filename or "", tuple(sorted((k, str(v)) for k, v in script.attributes.items())))


def unique_scripts(scripts: list) -> list:
    """``scripts`` in order, each script once (see :func:`_key`)."""
    seen, kept = set(), []
    for script in scripts:
        if _key(script) not in seen:
            seen.add(_key(script))
            kept.append(script)
    return kept


def _dedupe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts:
        scripts[:] = unique_scripts(scripts)  # the builder's own list: the next page starts from it too


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)  # after the themes and extensions have added theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
