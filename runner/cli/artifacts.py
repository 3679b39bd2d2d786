"""``runner artifacts ls ID`` and ``runner artifacts get ID KEY [DEST]``: a training job's
checkpoints, through the control plane (which reads the job's checkpoint URI)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from runner.cli.common import app, client, console, friendly, print_json
from runner.core.errors import NotFoundError

artifacts_app = typer.Typer(
    help="A training job's artifacts (checkpoints): list and download them.", no_args_is_help=True
)
app.add_typer(artifacts_app, name="artifacts")


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@artifacts_app.command("ls")
@friendly
def list_artifacts(workload_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Everything the job stored under its checkpoint URI, and which checkpoints are complete."""
    data = client().artifacts(workload_id)
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{workload_id}[/bold] ({data['state']}) artifacts at {data['uri']}", highlight=False)
    if data["final_checkpoint"]:
        console.print(f"final checkpoint: {data['final_checkpoint']}", highlight=False)
    if not data["items"]:
        console.print("nothing stored yet")
        return
    table = Table("KEY", "SIZE", "MODIFIED", box=None)
    for item in data["items"]:
        table.add_row(item["key"], size(item["size"]), datetime.fromtimestamp(item["modified"]).strftime("%H:%M:%S"))
    console.print(table)
    complete = [c["step"] for c in data["checkpoints"] if c["complete"]]
    partial = [c["step"] for c in data["checkpoints"] if not c["complete"]]
    console.print(
        f"checkpoints: complete at steps {', '.join(map(str, complete)) or '-'}"
        + (f"; partial (never loaded) at {', '.join(map(str, partial))}" if partial else "")
    )


@artifacts_app.command("get")
@friendly
def get_artifact(
    workload_id: str,
    key: Annotated[str, typer.Argument(help="An artifact key from `ls`, or a folder such as step-00000200.")],
    dest: Annotated[Path | None, typer.Argument(help="Where to write it (default: ./<name>).")] = None,
) -> None:
    """Download one artifact, or every file of a folder (a whole checkpoint)."""
    c = client()
    key = key.strip("/")
    target = dest or Path(Path(key).name)
    items = [i["key"] for i in c.artifacts(workload_id)["items"]]
    if key in items:
        path = c.artifact_get(workload_id, key, target / Path(key).name if target.is_dir() else target)
        console.print(f"wrote {path}", highlight=False)
        return
    inside = [k for k in items if k.startswith(key + "/")]
    if not inside:
        raise NotFoundError(
            f"{workload_id} has no artifact or folder {key!r}. To fix: runner artifacts ls {workload_id}"
        )
    for k in inside:
        c.artifact_get(workload_id, k, target / k[len(key) + 1 :])
    console.print(f"wrote {len(inside)} file(s) of {key} to {target}/", highlight=False)
