"""The ``etc`` command line. Commands live in etc.commands.* and load only when run, so ``etc --help`` is fast."""

from __future__ import annotations

import importlib
import os
import sys

import click

from etc import __version__

# name -> (module:function, one-line help shown by `etc --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "optimize": (
        "etc.commands.optimize:optimize",
        "Rewrite a model into an equivalent plainer one and verify it.",
    ),
    "verify": ("etc.commands.verify:verify", "Check that two models compute the same function."),
    "info": ("etc.commands.info:info", "Show inputs, ops, params, MACs and plainness of a model."),
    "export": ("etc.commands.export:export", "Export a PyTorch model factory (FILE.py:Factory) to ONNX."),
    "passes": ("etc.commands.passes:passes", "List the available passes and their rules."),
    "quantize": ("etc.commands.quantize:quantize", "Quantize a model to INT8 QDQ with image calibration."),
    "eval": ("etc.commands.evaluate:evaluate", "PSNR/SSIM of a super-resolution model on an image set."),
    "demo": (
        "etc.commands.demo:demo",
        "Run the whole job on the built-in x2 model.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands import on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, prog_name="etc")
def cli() -> None:
    """ETC, the Equivalent Transformation Compiler.

    Rewrites ONNX conv nets exported from PyTorch into equivalent graphs of Conv, ReLU and DepthToSpace,
    proves with onnxruntime that the outputs did not change, and quantizes them to INT8.

    \b
    Typical session:
      etc info model.onnx
      etc optimize model.onnx --passes fold,rep,et -o plain.onnx
      etc verify model.onnx plain.onnx
      etc quantize plain.onnx --calib samples -o int8.onnx

    Inputs are assumed to be images in [0, 1] unless --input-range says otherwise.

    \b
    Exit codes: 0 ok; 1 not equivalent; 2 bad input or options (including a model onnxruntime
    itself cannot run; the message names the node and what to do); 3 internal error, a bug in etc
    (ETC_DEBUG=1 shows the traceback; please report it).
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr with exit code 2 (1 for 'not equivalent', 3 for a bug)."""
    import warnings

    from etc.errors import EtcError, LimitWarning

    warnings.simplefilter("ignore", LimitWarning)  # the commands print a run's notes as lines of their own

    try:
        cli.main(args=argv, prog_name="etc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("etc: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EtcError as exc:
        click.echo(f"etc: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("etc: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug in etc, not in the user's input
        if os.environ.get("ETC_DEBUG"):
            raise
        msg = str(exc).splitlines()[0][:300] if str(exc) else ""
        click.echo(
            f"etc: internal error: {type(exc).__name__}: {msg} (set ETC_DEBUG=1 for a traceback)", err=True
        )
        sys.exit(3)
    else:
        sys.exit(0)


if __name__ == "__main__":
    main()
