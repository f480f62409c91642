"""Reading what an admin uploads: every file format, huggingtweets' cleaning, Discord data packages and
`url:` downloads, ending in one `IngestResult` (the posts kept and what was dropped)."""

from bot.core.ingest.cleaning import IngestStats, data_table
from bot.core.ingest.datapackage import FORMAT as PACKAGE_FORMAT
from bot.core.ingest.datapackage import is_data_package
from bot.core.ingest.download import DownloadError, Transfer, UrlReader
from bot.core.ingest.pipeline import ingest, ingest_path
from bot.core.ingest.rawposts import IngestError, UnsupportedFile
from bot.core.ingest.result import IngestResult, combine_people

__all__ = [
    "PACKAGE_FORMAT",
    "Transfer",
    "combine_people",
    "DownloadError",
    "IngestError",
    "IngestResult",
    "IngestStats",
    "UnsupportedFile",
    "UrlReader",
    "data_table",
    "ingest",
    "ingest_path",
    "is_data_package",
]
