"""Charts of ``dvc plots show|diff`` that draw without network: an HTML template with Vega inlined.

DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline its loss and trade-off charts are
blank. This fetches the same three releases DVC's page names, from the npm registry (pinned by sha256,
cached like every download of the project, or taken from ``--from DIR`` holding the three .tgz files),
writes ``.vega/offline.html`` (git-ignored: the scripts are Vega's, not this project's) with their minified
builds inlined, and points a DVC workspace's ``plots.html_template`` at it (in ``.dvc/config.local``, which
git ignores):

    .venv/bin/python -m pipelines.offline_plots [--workspace DIR] [--from DIR]

``make setup`` runs it for the project (a registry that does not answer is a warning: the charts then need
network, as before); ``make demo`` points the demo workspace at the same file.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_text, sha256_file
from anime_avatar.data.fetch import DownloadPolicy, download

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".vega" / "offline.html"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str  # of the registry's tarball (its sha512 integrity checked against the registry on 2026-12-04)
    script: str  # the minified build inside it

    @property
    def tarball(self) -> str:
        return f"{self.name}-{self.version}.tgz"

    @property
    def url(self) -> str:
        return f"https://registry.npmjs.org/{self.name}/-/{self.tarball}"


# The versions dvc-render's page loads (dvc_render/vega.py), so that its Vega-Lite specs render as they would.
PACKAGES = (
    Package("vega", "5.20.2", "d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d", "build/vega.min.js"),
    Package("vega-lite", "5.2.0", "f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b",
            "build/vega-lite.min.js"),
    Package("vega-embed", "6.18.2", "93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b",
            "build/vega-embed.min.js"),
)  # fmt: skip

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega, Vega-Lite and Vega-Embed inlined by pipelines/offline_plots.py: no network needed -->
SCRIPTS
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def script_of(package: Package, tarball: Path) -> str:
    """The minified build of ``package`` from its npm tarball."""
    with tarfile.open(tarball, "r:gz") as archive:
        member = archive.extractfile(f"package/{package.script}")
        if member is None:
            raise UserError(f"{tarball} holds no package/{package.script}")
        with io.TextIOWrapper(member, encoding="utf-8") as text:
            return text.read()


def build_page(scripts: list[str]) -> str:
    """DVC's page with the scripts inline where it would load them from the CDN; ``</script`` inside a script
    is escaped so that it cannot end the tag early."""
    escaped = (body.replace("</script", "<\\/script") for body in scripts)
    return PAGE.replace("SCRIPTS", "\n".join(f"<script>{body}</script>" for body in escaped))


def fetch(source: Path | None = None) -> list[Path]:
    """The three tarballs: from ``source`` when given (checked against the pins), else downloaded and cached."""
    policy = DownloadPolicy(retries=2, stall_timeout_s=20.0, deadline_s=120.0, settings="")
    paths = []
    for package in PACKAGES:
        if source is None:
            paths.append(download(package.url, package.sha256, policy=policy, local_option="--from DIR"))
            continue
        path = source / package.tarball
        if not path.is_file():
            raise UserError(f"--from {source}: no {package.tarball} there")
        if sha256_file(path) != package.sha256:
            raise UserError(f"{path}: sha256 is not the pinned {package.sha256}")
        paths.append(path)
    return paths


def install(workspace: Path, source: Path | None = None, template: Path = TEMPLATE) -> Path:
    """Write ``template`` (once) and set ``workspace``'s DVC ``plots.html_template`` to it; returns the template."""
    if not (workspace / ".dvc").is_dir():  # checked first: `dvc config --local` outside one is a traceback here
        raise UserError(f"--workspace {workspace} is not a DVC workspace (no .dvc folder): run `dvc init` there first")
    if not template.is_file():
        scripts = [script_of(p, path) for p, path in zip(PACKAGES, fetch(source), strict=True)]
        atomic_write_text(template, build_page(scripts))
    dvc = Path(sys.executable).parent / "dvc"
    # --local: .dvc/config.local, which DVC's own .gitignore keeps out of git. Relative to .dvc/, where DVC
    # resolves it: a checkout moved or copied elsewhere keeps its plots (an absolute path broke `dvc plots show`).
    relative = os.path.relpath(template.resolve(), (workspace / ".dvc").resolve())
    subprocess.run([str(dvc), "config", "--local", "plots.html_template", relative], cwd=workspace, check=True)
    return template


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.offline_plots", description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=ROOT, help="the DVC workspace (default: the project)")
    parser.add_argument("--from", dest="source", type=Path, help="a folder with the three npm tarballs")
    args = parser.parse_args(argv)
    if args.source is not None and not args.source.is_dir():  # (exit 0 with a warning until 2026-12-07)
        parser.error(f"--from {args.source}: no such folder")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        template = install(args.workspace, args.source, TEMPLATE)
    except UserError as err:
        if args.source is not None:  # the tarballs the user named are not right: an error, not a fallback
            raise SystemExit(f"error: {err}") from None
        # (make setup goes on when the registry does not answer: the pages then load Vega from the network)
        log.warning("offline plots not set up: %s; `dvc plots` pages will load Vega from the network", err)
        return
    log.info("dvc plots in %s: Vega inlined from %s", args.workspace, template)


if __name__ == "__main__":
    main()
