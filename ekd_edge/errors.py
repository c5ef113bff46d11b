"""Every exception a user sees: each is an input problem they can fix, printed by the CLI as one line (exit 2)."""


class EkdError(Exception):
    """A problem with the user's input (data, checkpoint, recipe, bundle): printed as one line, exit 2."""


class OtherRankError(EkdError):
    """Another rank of a data-parallel run failed (and says why); this one stops without a line of its own."""


class RankError(EkdError):
    """An input problem met by one rank other than 0 alone: that rank, otherwise silent, says it."""


class CorpusError(EkdError):
    """A corpus file is unreadable, misaligned or holds a line the loader refuses."""


class RecipeError(EkdError):
    """A recipe has an unknown key, a wrong type or an impossible value."""


class CheckpointError(EkdError):
    """A checkpoint is missing, corrupt, of an unsupported type or uses another vocabulary."""


class DiskError(EkdError):
    """A disk is full, a file over the size limit or a file system read-only while ekd-edge writes:
    the destination is named, and what was there before is left as it was."""


class BundleError(EkdError):
    """An exported bundle is incomplete, tampered with or fails a gate."""


class ProfileError(EkdError):
    """An export profile is missing, has an unknown key or an impossible value."""


class ReportError(EkdError):
    """A run has no benchmark report to read, or one that cannot be used."""


class ProbeError(EkdError):
    """The memory probe subprocess failed or printed nothing usable."""


class ArmError(EkdError):
    """The aarch64 root or the emulator is missing or broken."""


class AdbError(EkdError):
    """adb is missing, no device is attached, or the run on the device failed."""


class RunError(EkdError):
    """A run directory lacks what a command needs from it (e.g. no finished stage)."""


class BrowserError(EkdError):
    """Node, the npm packages or chromium are missing, or the page failed in the browser."""
