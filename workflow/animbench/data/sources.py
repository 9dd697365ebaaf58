"""Real dataset sources: pinned metadata files, video/archive download, cropping.

`run(step, dataset, spec, inputs, out)` is what `animbench data <step>` calls. The workflow's
`--spec` JSON is the dataset's config entry plus `cache` (the cache folder) and, for YouTube
datasets, `youtube` (the yt-dlp settings); for the metadata step it is the pinned file itself:
``{"url": ..., "sha256": ..., "cache": ...}``.

Layout under ``results/data/<dataset>/``:

    metadata.csv, test_list.txt   pinned files (rule metadata)
    raw/<ytid>.mp4 ...            finished downloads only (validated, then renamed into place)
    raw/manifest.parquet          every download attempt ever made (the availability manifest)
    availability.parquet          one row per video: its latest attempt (rule download output)
    clips/{train,test}/<name>/    the cropped clips (frame folders)
    clips.parquet                 one row per expected clip: status, frames (rule crop output)

Only the small tables are declared outputs, so Snakemake never deletes hours of downloads or
crops when a job fails or reruns; the steps resume from what is on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from animbench.downloads import check_online, sha256_file
from animbench.downloads import download as download_file
from animbench.errors import AnimbenchError, DataError
from animbench.files import write_text_atomic

DEFAULT_CACHE = "resources/cache"
TIMEOUT_S = 60


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_path(url: str, cache: str | Path) -> Path:
    """Where a URL lives in the cache: <cache>/downloads/<sha256(url)[:16]>/<basename>."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "download"
    return Path(cache) / "downloads" / key / name


YANDEX_HOSTS = ("yadi.sk", "disk.yandex.ru", "disk.yandex.com", "disk.yandex.net")
YANDEX_API = "https://cloud-api.yandex.net/v1/disk/public/resources/download"


def resolve_yandex(url: str, api: str = YANDEX_API) -> str:
    """The direct download link of a Yandex Disk public link (a folder comes as one zip).

    Yandex's public REST API answers ``{"href": ..., "method": "GET"}``; the link expires, so it
    is resolved again for every download and never cached.
    """
    query = urllib.parse.urlencode({"public_key": url})
    check_online(f"{api}?{query}")
    try:
        with urllib.request.urlopen(f"{api}?{query}", timeout=TIMEOUT_S) as resp:
            answer = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"cannot resolve {url} through {api}: {' '.join(str(reason).split())}"
        ) from exc
    href = answer.get("href") if isinstance(answer, dict) else None
    if not href:
        raise DataError(f"cannot resolve {url}: the Yandex Disk API answered without an href")
    return href


def direct_url(url: str) -> str:
    """`url` itself, or the direct link behind a share page we know how to resolve."""
    host = (urllib.parse.urlparse(url).hostname or "").lower()
    return resolve_yandex(url) if host in YANDEX_HOSTS else url


def fetch(url: str, sha256: str | None, cache: str | Path) -> Path:
    """Return the cached copy of `url`, downloading it once and checking its sha256.

    A checksum mismatch raises a one-line DataError naming the URL (and removes the bad copy);
    with `sha256` None the computed checksum is printed so it can be pinned in config.yaml.
    Share pages (Yandex Disk) are resolved to their direct link; the cache is keyed by `url`.
    """
    path = cached_path(url, cache)
    if not path.exists():
        download_file(direct_url(url), path, timeout=TIMEOUT_S)
    actual = sha256_file(path)
    if sha256 is None:
        print(
            f"animbench: {url} is not pinned; its sha256 is {actual} (add it to config.yaml)",
            file=sys.stderr,
        )
    elif actual != sha256.lower():
        path.unlink(missing_ok=True)
        raise DataError(f"sha256 mismatch for {url}: expected {sha256}, got {actual}")
    return path


def metadata(dataset: str, spec: Mapping, out: str | Path) -> Path:
    """Fetch a pinned file (spec: url, sha256, cache) and copy it to `out` atomically."""
    entry = spec.get("metadata", spec)
    if not isinstance(entry, Mapping) or not entry.get("url"):
        raise DataError(f"dataset '{dataset}': the metadata spec has no url")
    src = fetch(entry["url"], entry.get("sha256"), spec.get("cache", DEFAULT_CACHE))
    dst = Path(out)
    _atomic_copy(src, dst)
    return dst


# ------------------------------------------------------------------------------ inputs

PINNED_ROLES = {"metadata.csv": "metadata", "test_list.txt": "test_list"}


def _inputs_by_role(inputs: Sequence[str]) -> dict[str, Path]:
    """The workflow passes its input files by name (metadata.csv, test_list.txt, ...)."""
    roles: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        roles[PINNED_ROLES.get(path.name, path.stem)] = path
    return roles


def clip_table(dataset: str, spec: Mapping, inputs: Sequence[str]) -> pd.DataFrame:
    """The clips the published metadata defines (see data.metadata), with the split applied."""
    from animbench.data.metadata import read_metadata, test_youtube_ids

    roles = _inputs_by_role(inputs)
    if "metadata" not in roles:
        raise DataError(f"dataset '{dataset}': no metadata.csv among the inputs")
    flavour = spec.get("paper_name") or dataset
    test_ids = test_youtube_ids(roles["test_list"]) if "test_list" in roles else None
    return read_metadata(roles["metadata"], flavour, test_ids=test_ids)


def _write_json(path: Path, payload: Mapping) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


# ---------------------------------------------------------------------------- download


def download(
    dataset: str, spec: Mapping, inputs: Sequence[str], out: str | Path, threads: int = 1
) -> pd.DataFrame:
    """Download a dataset's sources into ``<data>/raw`` and write the per-video availability
    table to `out` (``<data>/availability.parquet``). Missing or private videos are rows, not
    errors; an unreachable archive (a whole dataset) is an error."""
    from animbench.files import write_parquet_atomic

    out = Path(out)
    raw = out.parent / "raw"
    if spec.get("source") == "youtube":
        from animbench.data import youtube

        table = clip_table(dataset, spec, inputs)
        # one download per video, at the reference height of its first row (load_videos.py)
        videos = table.drop_duplicates("youtube_id")[["youtube_id", "height"]]
        options = youtube.DownloadOptions.from_config(spec.get("youtube", {}))
        availability = youtube.download_videos(videos.reset_index(drop=True), raw, options)
    elif spec.get("source") == "archive":
        availability = _download_archive(dataset, spec, raw)
    else:
        raise DataError(f"dataset '{dataset}': source {spec.get('source')!r} is not downloadable")
    write_parquet_atomic(availability, out)
    ok = availability["status"].isin(["ok", "present"]).sum()
    print(f"{dataset}: {ok}/{len(availability)} sources available ({out})")
    return availability


def _download_archive(dataset: str, spec: Mapping, raw: Path) -> pd.DataFrame:
    """Fetch the pinned archive through the cache and link it as raw/archive<suffix>."""
    import time

    entry = spec.get("archive") or {}
    if not entry.get("url"):
        raise DataError(f"dataset '{dataset}': archive has no url")
    began = time.time()
    cached = fetch(entry["url"], entry.get("sha256"), spec.get("cache", DEFAULT_CACHE))
    raw.mkdir(parents=True, exist_ok=True)
    target = raw / "archive"
    if not target.exists():
        _atomic_copy(cached, target)
    row = {
        "youtube_id": f"{dataset}-archive",
        "status": "ok",
        "error_class": "",
        "message": entry["url"],
        "bytes": target.stat().st_size,
        "seconds": time.time() - began,
        "time": pd.Timestamp.now(tz="UTC"),
        "path": target.name,
        "sha256": sha256_file(target),
    }
    return pd.DataFrame([row])


# -------------------------------------------------------------------------------- crop


def crop(
    dataset: str, spec: Mapping, inputs: Sequence[str], out: str | Path, threads: int = 1
) -> pd.DataFrame:
    """Cut the clips into ``<data>/clips`` and write the clip index to `out`
    (``<data>/clips.parquet``): one row per expected clip with its status and frame count."""
    from animbench.files import write_parquet_atomic

    out = Path(out)
    clips_dir = out.parent / "clips"
    roles = _inputs_by_role(inputs)
    options = {"selection": "timestamps", "train_format": "png", "keep_aspect": False}
    options.update(spec.get("crop") or {})
    if spec.get("source") == "youtube":
        from animbench.data.crop import crop_dataset

        table = clip_table(dataset, spec, inputs)
        raw = out.parent / "raw"
        videos = _available_videos(roles, raw)
        index = crop_dataset(
            table,
            videos,
            clips_dir,
            int(spec.get("resolution", 256)),
            workers=max(1, threads),
            selection=options["selection"],
            train_format=options["train_format"],
            keep_aspect=bool(options["keep_aspect"]),
        )
    elif spec.get("source") == "archive":
        index = _crop_mgif(dataset, spec, out.parent / "raw", clips_dir, options)
    else:
        raise DataError(f"dataset '{dataset}': source {spec.get('source')!r} has no crop step")
    index = index.assign(dataset=dataset, **{k: str(v) for k, v in options.items()})
    write_parquet_atomic(index, out)
    _write_json(
        out.with_suffix(".json"),
        {
            "dataset": dataset,
            "resolution": spec.get("resolution"),
            **options,
            "status_counts": index["status"].value_counts().to_dict(),
        },
    )
    counts = index.groupby(["partition", "status"]).size().to_dict()
    print(f"{dataset}: clips by (split, status): {counts}")
    return index


def _available_videos(roles: Mapping[str, Path], raw: Path) -> dict[str, Path]:
    """YouTube id -> finished download, from the availability table."""
    if "availability" not in roles:
        raise DataError("crop needs availability.parquet among its inputs")
    try:
        availability = pd.read_parquet(roles["availability"])
    except (OSError, ValueError) as exc:
        raise DataError(f"{roles['availability']}: unreadable availability table ({exc})") from exc
    videos = {}
    for row in availability.itertuples():
        if row.status in ("ok", "present") and row.path:
            path = raw / str(row.path)
            if path.is_file():
                videos[str(row.youtube_id)] = path
    return videos


def _crop_mgif(
    dataset: str, spec: Mapping, raw: Path, clips_dir: Path, options: Mapping
) -> pd.DataFrame:
    """Extract the archive (safely) and turn its gifs into clips with MTIA's split."""
    from animbench.data.archives import mgif_to_clips, safe_extract
    from animbench.data.crop import claim_clips
    from animbench.data.video import num_frames

    archive = raw / "archive"
    if not archive.is_file():
        raise DataError(f"{archive}: archive not downloaded (run the download step)")
    extracted = raw / "extracted"
    if not extracted.is_dir():
        safe_extract(archive, extracted)
    image_format = "jpeg" if options.get("train_format") == "jpeg" else "png"
    claim_clips(clips_dir, {"train_format": image_format})  # clips of another format are redone
    mgif_to_clips(extracted, clips_dir, train_format=image_format)
    rows = []
    for split in ("train", "test"):
        folder = clips_dir / split
        for clip in sorted(folder.iterdir()) if folder.is_dir() else []:
            if clip.is_dir() and not clip.name.startswith("."):
                frames = num_frames(clip)
                rows.append(
                    {
                        "name": clip.name,
                        "partition": split,
                        "youtube_id": clip.name,
                        "status": "written",
                        "frames": frames,
                        "expected_frames": frames,
                        "message": "",
                    }
                )
    if not rows:
        raise DataError(f"{archive}: no gifs found in the archive")
    return pd.DataFrame(rows)


def run(
    step: str,
    dataset: str,
    spec: Mapping,
    inputs: Sequence[str] = (),
    out: str | Path = "",
    threads: int = 1,
) -> None:
    """Entry point of `animbench data <step>`."""
    if not out:
        raise AnimbenchError("--out is required")
    if step == "metadata":
        metadata(dataset, spec, out)
    elif step == "download":
        download(dataset, spec, inputs, out, threads)
    elif step == "crop":
        crop(dataset, spec, inputs, out, threads)
    else:
        raise AnimbenchError(f"unknown data step '{step}' (metadata, download, crop)")
