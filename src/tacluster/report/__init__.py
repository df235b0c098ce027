"""Report stage: the HTML gallery of a run directory, its figures and thumbnails."""

from tacluster.report.html import build_report, save_confusion_png

__all__ = ["build_report", "save_confusion_png"]
