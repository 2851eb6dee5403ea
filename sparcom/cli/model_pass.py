"""Commands that run a model over instruction rows into a run directory (``profile``, ``attribute``): one argument
list, one call into the API, one summary printed by rank 0 — declared once, so the two cannot drift apart."""

from collections.abc import Callable
from typing import Any

from sparcom.cli.app import app
from sparcom.cli.options import (
    Data,
    Device,
    DeviceMap,
    Dtype,
    ModelArgument,
    Overwrite,
    Quiet,
    Resume,
    out_option,
    with_settings,
)


def model_pass_command(name: str, settings_class: type, out_help: str, api_function: Callable[[], Callable[..., Any]],
                       summarise: Callable[[Any], None], doc: str) -> Callable[..., None]:
    """Register ``sparcom NAME MODEL --data … --out …`` with the options of ``settings_class``.

    ``api_function`` returns the public API function (imported when the command runs, so ``--help`` and argument
    errors never import torch); ``summarise`` prints the finished run on rank 0 only.
    """

    def command(
        model: ModelArgument,
        data: Data,
        out: out_option(out_help),
        settings: Any,
        dtype: Dtype = "auto",
        device: Device = "cpu",
        device_map: DeviceMap = None,
        resume: Resume = False,
        overwrite: Overwrite = False,
        quiet: Quiet = False,
    ) -> None:
        run = api_function()(model, data, out, settings, dtype=dtype, device=device, device_map=device_map,
                             resume=resume, overwrite=overwrite, progress=not quiet)
        from sparcom.distributed import is_main_process  # torch: only once the arguments were checked

        if is_main_process():
            summarise(run)

    command.__name__ = command.__qualname__ = f"{name}_command"
    command.__doc__ = doc
    return app.command(name)(with_settings(settings_class)(command))
