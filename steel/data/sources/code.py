"""StarCoder data (The Stack, deduplicated): source files with repository metadata."""

import re
from collections.abc import Iterable

from steel.data.sources.base import RecordContext, SourceAdapter, make_record, optional_str, register, require

# StarCoder's training text starts some files with a header line of metadata tags, such as
# `<reponame>owner/repo<filename>path/a.py<gh_stars>1-10`. The header is moved to metadata so
# the text is the file itself; tags in the middle of a file are left alone.
HEADER_PATTERN = re.compile(r"\A(?:<(?:reponame|filename|gh_stars)>[^<\n]*)+\n")
HEADER_TAG_PATTERN = re.compile(r"<(reponame|filename|gh_stars)>([^<\n]*)")


def split_header(content: str) -> tuple[dict[str, str], str]:
    """Return (header tags, code) for a StarCoder `content` string."""
    match = HEADER_PATTERN.match(content)
    if match is None:
        return {}, content
    tags = dict(HEADER_TAG_PATTERN.findall(match.group()))
    return tags, content[match.end() :]


@register
class StarCoderAdapter(SourceAdapter):
    name = "starcoder"
    description = "StarCoder data (C++, Java, Python, ...); a leading metadata header goes to metadata"
    input_format = "Parquet max_stars_repo_path, max_stars_repo_name, max_stars_count, id, content"
    columns = ["max_stars_repo_path", "max_stars_repo_name", "max_stars_count", "id", "content"]

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        header, code = split_header(require(raw, "content"))
        metadata = {
            "repo_path": raw.get("max_stars_repo_path"),
            "repo_name": raw.get("max_stars_repo_name"),
            "stars": raw.get("max_stars_count"),
            **{f"header_{key}": value for key, value in header.items()},
        }
        native_id = optional_str(raw, "id")
        record_id = f"{self.name}:{context.path.name}:{native_id}" if native_id else context.default_id()
        yield make_record(self.name, record_id, code, metadata={k: v for k, v in metadata.items() if v is not None})
