"""The ``downpool`` command: a click group whose subcommands load on demand.

Nothing here imports NumPy, Numba or scikit-image at module level, so that
``downpool --help`` answers at once; each subcommand's module is imported
only when that subcommand runs (or its help is shown).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, Mapping

import click

from . import __version__
from .methods import METHODS, MethodSpec, Param

# name -> ("module", "attribute", "one-line help shown by `downpool --help`")
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "shrink": ("downpool.cli_shrink", "shrink", "Downscale image files and folders."),
    "compare": ("downpool.cli_compare", "compare",
                "Measure what each method keeps (SSIM/PSNR) on your images."),
    "pyramid": ("downpool.cli_pyramid", "pyramid",
                "Write an OME-Zarr image pyramid (needs downpool[dask])."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_SUBCOMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _SUBCOMMANDS and name not in self.commands:
            module, attr, _ = _SUBCOMMANDS[name]
            try:
                command = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                return None  # not built yet: click reports "No such command"
            self.add_command(command, name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so that `--help` imports nothing.
        rows = [(name, _SUBCOMMANDS[name][2]) for name in sorted(_SUBCOMMANDS)]
        rows += [(name, cmd.get_short_help_str(60)) for name, cmd in sorted(self.commands.items())
                 if name not in _SUBCOMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="downpool")
def main() -> None:
    """Downscale images with the pooling methods of the deep-learning literature.

    \b
    downpool shrink photo.png --method softpool -k 2
    downpool shrink photos/ -o small/ --method dpid --scale 0.25 -j 2
    downpool compare photo.png -k 2
    downpool methods
    """


# --- method parameters as options, generated from the registry --------------


def _param_owners() -> dict[str, list[tuple[MethodSpec, Param]]]:
    owners: dict[str, list[tuple[MethodSpec, Param]]] = {}
    for spec in METHODS.values():
        for param in spec.params.values():
            owners.setdefault(param.name, []).append((spec, param))
    return owners


def _click_type(param: Param) -> Any:
    if param.kind == "choice":
        return click.Choice(param.choices)
    return int if param.kind == "int" else float


def method_param_options(func: Callable) -> Callable:
    """Add one option per method parameter (``--beta``, ``--p``, ``--lam`` ...).

    Each defaults to None, meaning "the method's default", which the help text
    states per method.  The values arrive in the command as ``method_params``.
    """
    for name, owners in reversed(list(_param_owners().items())):
        first = owners[0][1]
        defaults = ", ".join(f"{spec.name} {param.default!r}" for spec, param in owners)
        help_text = f"{first.doc} [{first.allowed}; default: {defaults}]"
        func = click.option(f"--{name}", name, type=_click_type(first), default=None,
                            help=help_text)(func)
    return func


def pop_method_params(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the method-parameter options out of a command's ``kwargs``: the ones given."""
    given = {}
    for name in _param_owners():
        value = kwargs.pop(name, None)
        if value is not None:
            given[name] = value
    return given


def params_for(spec: MethodSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """The given parameters that ``spec`` has."""
    return {k: v for k, v in given.items() if k in spec.params}


def check_params_used(methods: Iterable[MethodSpec], given: Mapping[str, Any]) -> None:
    """A usage error for a parameter that none of ``methods`` takes (``--beta`` with avg)."""
    methods = list(methods)
    for name in given:
        if not any(name in spec.params for spec in methods):
            takers = ", ".join(s.name for s, _ in _param_owners()[name])
            chosen = ", ".join(s.name for s in methods)
            raise click.UsageError(
                f"--{name} is a parameter of {takers}, not of the chosen method {chosen}"
            )


def command_params(method: str, kwargs: dict[str, Any]) -> tuple[MethodSpec, dict[str, Any]]:
    """The chosen method and its parameters from a command's options; a bad one is a
    usage error."""
    from .methods import get_method, resolve_params

    given = pop_method_params(kwargs)
    spec = get_method(method)
    check_params_used([spec], given)
    params = params_for(spec, given)
    try:
        resolve_params(spec, params)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return spec, params


def method_choice() -> click.Choice:
    return click.Choice(list(METHODS))


@main.command("methods")
def methods_command() -> None:
    """List every method with its parameters, defaults and allowed ranges."""
    for spec in METHODS.values():
        click.echo(f"{spec.name:<11} {spec.summary}")
        for param in spec.params.values():
            click.echo(f"{'':<13}--{param.name} (default {param.default!r}): {param.doc}; "
                       f"{param.allowed}")


if __name__ == "__main__":  # pragma: no cover
    main()


def memory_limit_option(option: str, shares: int = 1, processes: int = 1,
                        ) -> tuple[int | None, bool]:
    """:func:`downpool.memory.memory_limit` of a command's ``--max-memory``: a bad size is a
    usage error."""
    from .memory import memory_limit

    try:
        return memory_limit(option, shares, processes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-memory") from None
