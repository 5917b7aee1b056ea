"""Ask a trained LXMERT about your own pictures: answers, region importance, a PNG and a web page."""

from ask.asker import Asker, AskResult, ImageRegions, VerifyResult
from ask.checkpoints import AskError, find_checkpoints

__all__ = ["AskError", "AskResult", "Asker", "ImageRegions", "VerifyResult", "find_checkpoints"]
