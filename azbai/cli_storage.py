"""``azbai storage``: the embedded default storage from the command line, named the way ``az storage`` users expect.

    azbai storage start|stop|status
    azbai storage upload   --account A (--container C | --share S) --source PATH [--destination-path P] [--incremental]
    azbai storage download --account A (--container C | --share S) --destination PATH [--source-path P] [--incremental]
    azbai storage list     --account A (--container C | --share S) [--prefix P]

Each command parses, calls one library function and prints; errors are :class:`~azbai.errors.StorageError`, which
the ``azbai`` group prints as ``Error: …``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from azbai.local.workspace import WORKSPACE_ENV, Workspace

if TYPE_CHECKING:
    from azbai.local.stores import Store
    from azbai.local.transfer import TransferReport

_account_option = click.option(
    "--account",
    "--account-name",
    "account",
    envvar="AZURE_BATCHAI_STORAGE_ACCOUNT",
    default="devstoreaccount1",
    show_default=True,
    help="The storage account as the job names it (else $AZURE_BATCHAI_STORAGE_ACCOUNT; a job's unresolved "
    "<AZURE_BATCHAI_STORAGE_ACCOUNT> is devstoreaccount1 locally).",
)
_container_option = click.option("--container", "-c", help="A blob container of the account.")
_share_option = click.option("--share", "-s", help="An Azure File share of the account (a local directory).")
_workers_option = click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Files transferred in parallel.",
)


@click.group("storage")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False),
    help=f"The local workspace (default: ${WORKSPACE_ENV}, else ./.azbai).",
)
@click.pass_context
def storage(ctx: click.Context, workspace: str | None) -> None:
    """The embedded default storage: Azurite for blob containers, local directories for file shares."""
    ctx.obj = Workspace.resolve(workspace)


@storage.command()
@click.option(
    "--account", "--account-name", "accounts", multiple=True, help="An account to serve (repeatable)."
)
@click.pass_obj
def start(workspace: Workspace, accounts: tuple[str, ...]) -> None:
    """Start the emulator for this workspace (or keep the running one)."""
    from azbai.local.azurite import Emulator

    emulator = Emulator(workspace)
    before = emulator.state()
    state = emulator.ensure(accounts)
    verb = "already running" if before is not None and before.pid == state.pid else "started"
    click.echo(f"Azurite {verb} on {state.url} (pid {state.pid}); accounts: {', '.join(state.accounts)}")
    click.echo(f"data: {state.location}")


@storage.command()
@click.pass_obj
def stop(workspace: Workspace) -> None:
    """Stop this workspace's emulator (the data stays on disk)."""
    from azbai.local.azurite import Emulator

    state = Emulator(workspace).stop()
    click.echo(f"stopped Azurite (pid {state.pid})" if state else "Azurite is not running")


@storage.command()
@click.pass_obj
def status(workspace: Workspace) -> None:
    """Say whether this workspace's emulator is running, where, and with which accounts."""
    from azbai.local.azurite import Emulator

    result = Emulator(workspace).status()
    click.echo(f"Azurite {result.detail}")
    if result.running and result.state is not None:
        click.echo(f"accounts: {', '.join(result.state.accounts)}")
        click.echo(f"data: {result.state.location}")


@storage.command()
@_account_option
@_container_option
@_share_option
@click.option("--source", required=True, type=click.Path(exists=True), help="A local file or directory.")
@click.option(
    "--destination-path", default="", help="The folder in the container or share (default: its root)."
)
@click.option("--incremental", is_flag=True, help="Skip files whose size and MD5 already match.")
@_workers_option
@click.pass_obj
def upload(
    workspace: Workspace,
    account: str,
    container: str | None,
    share: str | None,
    source: str,
    destination_path: str,
    incremental: bool,
    workers: int,
) -> None:
    """Upload a file, or the files under a directory, to a container or share."""
    from azbai.local import transfer

    store = _open(workspace, account, container, share)
    with _progress("uploading") as progress:
        report = transfer.upload(
            Path(source), store, destination_path, incremental=incremental, workers=workers, progress=progress
        )
    click.echo(_summary("uploaded", report, store.url_for(destination_path.strip("/"))))


@storage.command()
@_account_option
@_container_option
@_share_option
@click.option("--destination", required=True, type=click.Path(file_okay=False), help="The local directory.")
@click.option(
    "--source-path", default="", help="The folder (or file) in the container or share (default: all)."
)
@click.option("--incremental", is_flag=True, help="Skip files whose size and MD5 already match.")
@_workers_option
@click.pass_obj
def download(
    workspace: Workspace,
    account: str,
    container: str | None,
    share: str | None,
    destination: str,
    source_path: str,
    incremental: bool,
    workers: int,
) -> None:
    """Download the files under a folder of a container or share into a local directory."""
    from azbai.local import transfer

    store = _open(workspace, account, container, share)
    with _progress("downloading") as progress:
        report = transfer.download(
            store, source_path, Path(destination), incremental=incremental, workers=workers, progress=progress
        )
    click.echo(_summary("downloaded", report, destination))


@storage.command("list")
@_account_option
@_container_option
@_share_option
@click.option("--prefix", default="", help="Only paths starting with this.")
@click.option("--long", "-l", "long_format", is_flag=True, help="Also print the size and MD5 of each file.")
@click.pass_obj
def list_(
    workspace: Workspace,
    account: str,
    container: str | None,
    share: str | None,
    prefix: str,
    long_format: bool,
) -> None:
    """Print the full URL of every file in a container or share, one per line."""
    store = _open(workspace, account, container, share)
    for entry in store.list(prefix):
        url = store.url_for(entry.path)
        click.echo(f"{entry.size:>12}  {entry.md5 or '-':32}  {url}" if long_format else url)


def _open(workspace: Workspace, account: str, container: str | None, share: str | None) -> Store:
    if (container is None) == (share is None):
        raise click.UsageError("give exactly one of --container and --share")
    from azbai.local.stores import open_store

    return open_store(workspace, account, container=container, share=share)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int, int, int], None] | None]:
    """A progress callback drawing a bar on stderr when it is a terminal (else ``None``)."""
    if not sys.stderr.isatty():
        yield None
        return
    bar: Any = None
    shown = 0

    def update(done_bytes: int, total_bytes: int, done_files: int, total_files: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(
                length=max(total_bytes, 1), label=f"{label} {total_files} file(s)", file=sys.stderr
            )
            bar.__enter__()
        bar.update(done_bytes - shown)
        shown = done_bytes

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _summary(verb: str, report: TransferReport, where: str) -> str:
    mb = report.bytes_transferred / 1e6
    rate = f", {report.throughput_mb_s:.1f} MB/s" if report.files_transferred and report.seconds > 0 else ""
    skipped = f", skipped {report.files_skipped} unchanged" if report.files_skipped else ""
    return f"{verb} {report.files_transferred} file(s) ({mb:.1f} MB){skipped} in {report.seconds:.2f} s{rate}: {where}"
