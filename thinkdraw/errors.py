"""User-facing errors. The CLI prints any ThinkdrawError as one line and exits with code 2."""


class ThinkdrawError(Exception):
    """A mistake in what the user gave us (input, config, files), not a bug in thinkdraw."""


class ImageError(ThinkdrawError):
    """An image that cannot be read or is not of the expected kind."""


class MetadataError(ThinkdrawError):
    """GenEval-style metadata that does not follow the schema."""


class LayoutError(ThinkdrawError):
    """A prompt spec whose objects cannot be placed on the canvas."""


class EvalFolderError(ThinkdrawError):
    """A folder that is not in its benchmark's layout (GenEval's, T2I-CompBench's, DPG-Bench's)."""


class DetectorError(ThinkdrawError):
    """An evaluator model (a detector, CLIP, BLIP-VQA) that cannot be loaded, or does not fit the benchmark it is
    asked to score."""


class BenchmarkError(ThinkdrawError):
    """Benchmark data that cannot be scored: an unknown category, a prompt the rules cannot read, a question file
    (DPG-Bench's csv) that does not follow its format."""
