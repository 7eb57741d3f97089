"""``loraops serve``: the champions of one or more registered models as named adapters on one base model,
over MLflow's scoring protocol on 127.0.0.1 (:mod:`loraops.registry.library`,
:mod:`loraops.registry.scoring_server`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from loraops.cli.app import ParamsOption, SetOption, app, fails_cleanly, project
from loraops.core import RegistryError


@app.command()
def serve(model: Optional[list[str]] = typer.Option(None, "--model", "-m",
                                                    help="A registered model whose champion is served (repeat it; "
                                                         "default registry.model_name)."),
          host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on."),
          port: int = typer.Option(5000, "--port", help="The port to listen on."),
          poll_seconds: float = typer.Option(30.0, "--poll-seconds",
                                             help="How often to look for moved champion aliases (0: never)."),
          batch_size: int = typer.Option(16, "--batch-size", help="Rows generated together."),
          max_rows: int = typer.Option(64, "--max-rows", help="The most rows one request may hold."),
          max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", help="The largest request body."),
          max_text_chars: int = typer.Option(4000, "--max-text-chars", help="The longest text in a row."),
          params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Serve each model's champion as a named adapter on the one local base model (models/base), answering
    /invocations per row; a moved champion is picked up without dropping requests."""
    from loraops.core.tracking import connect
    from loraops.registry.library import AdapterLibrary, log
    from loraops.registry.scoring_server import Limits, ScoringServer

    with fails_cleanly():
        params, layout = project(params_file, overrides)
        if min(batch_size, max_rows, max_body_bytes, max_text_chars) < 1 or poll_seconds < 0:
            raise RegistryError("--batch-size, --max-rows, --max-body-bytes and --max-text-chars must be at least 1, "
                                "--poll-seconds at least 0")
        if not (layout.base_model_dir / "config.json").is_file():
            raise RegistryError(f"{layout.base_model_dir}: no base model here; run the base_model stage first")
        names = list(model or [params.registry.model_name])
        library = AdapterLibrary(connect(layout, params.registry), layout.base_model_dir, names, batch_size)
        for line in library.refresh():
            log(line)
        if not library.versions():
            raise RegistryError(f"nothing to serve: no champion of {', '.join(names)} could be loaded (see above)")
        server = ScoringServer(library, host, port, poll_seconds or None,
                               Limits(max_body_bytes, max_rows, max_text_chars))
    log(f"{server.url}/invocations serving " + ", ".join(f"{n} v{v}" for n, v in library.versions().items())
        + f" on base {library.base_sha256[:12]} (GET /ping, /health)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.httpd.server_close()
        library.close()
