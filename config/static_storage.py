"""The static files storage with DEBUG off: WhiteNoise's compressed, content-hashed copies,
with the console's ES module imports (`import ... from "./api.js";`) rewritten to the
hashed names too, so that a module never loads a sibling from a stale cache."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True
