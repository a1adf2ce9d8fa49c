"""Tables the data modules share, in one small module that imports nothing of fmforge.data
(so collect, readers and documents can all use them without import circles)."""
from __future__ import annotations

from fmforge.errors import UserError

# file extension -> the language recorded in meta.language (prepare's code/prose split)
LANGUAGES = {".py": "python", ".md": "markdown", ".rst": "rst", ".txt": "text", ".c": "c", ".h": "c",
             ".js": "javascript", ".ts": "typescript", ".rs": "rust", ".go": "go", ".java": "java",
             ".cpp": "cpp", ".sh": "shell", ".html": "html", ".json": "json", ".yaml": "yaml", ".toml": "toml"}
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text", ".markdown"}
JSONL_ENDINGS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".ndjson")


class DataError(UserError):
    """Input the data stages cannot use (unreadable in strict mode, no text field, ...);
    the message says which file, line or column, and the fix."""


def format_of(name: str) -> str:
    """The reader for a file name: jsonl, parquet, warc, tar or text (anything else: read
    as text or code; binary content is skipped and counted by the reader)."""
    name = name.lower()
    if name.endswith(JSONL_ENDINGS):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return "text"
