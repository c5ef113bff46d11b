"""One exception type for every input problem a user can fix; the CLI prints it as one line."""


class EkdError(Exception):
    """A problem with the user's input (data, checkpoint, recipe, bundle): printed as one line, exit 2."""


class CorpusError(EkdError):
    """A corpus file is unreadable, misaligned or holds a line the loader refuses."""


class RecipeError(EkdError):
    """A recipe has an unknown key, a wrong type or an impossible value."""


class CheckpointError(EkdError):
    """A checkpoint is missing, corrupt, of an unsupported type or uses another vocabulary."""


class BundleError(EkdError):
    """An exported bundle is incomplete, tampered with or fails a gate."""
