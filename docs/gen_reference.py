"""Generate the reference pages of the documentation site at build time (mkdocs-gen-files).

Nothing here is copied by hand, so the pages follow the code:

- ``reference/cli.md``: every command of the ``ampere`` console script, read from the argparse
  parsers (``ampere.cli.build_parser`` for the library's commands, ``orchestration.cli.build_parser``
  for the whole command, which adds ``pipeline``, ``audit``, ``index``, ``status`` and ``wait-run``);
- ``reference/configuration.md``: the fields of every class in ``CONFIG_CLASSES`` (dataclasses and
  pydantic models such as Dagster ``Config``);
- ``reference/api/…``: one page per module of the packages in ``API_PACKAGES``, found by walking
  their folders (a new module gets its page without an edit here), rendered by mkdocstrings.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# The configuration classes rendered on the Configuration reference page, in page order.
# Keep this list up to date when a config class is added, moved or renamed: the build fails on a
# name that does not import.
CONFIG_CLASSES = [
    # Where a deployment's state lives and how it runs (flags, then environment, then defaults)
    "ampere.settings.Settings",
    # Library settings (dataclasses)
    "ampere.training.train.TrainConfig",
    "ampere.models.tower.TowerConfig",
    "ampere.asr.candidates.TaggerConfig",
    "ampere.asr.keywords.KeywordConfig",
    "ampere.asr.summarizer.GenerationConfig",
    "ampere.asr.backends.llamacpp.LlamaCppConfig",
    "ampere.asr.backends.vllm.VllmConfig",
    "ampere.asr.backends.transformers.TransformersConfig",
    "ampere.data.format.SplitFractions",
    "ampere.retrieval.index.IndexConfig",
    "ampere.serve.app.ServeConfig",
    "ampere.data.synth.SynthConfig",
    "ampere.training.ablation.AblationConfig",
    # Dagster run config of the assets (pydantic models)
    "orchestration.assets.summaries.SummariesConfig",
    "orchestration.assets.summaries.TrainingSetConfig",
    "orchestration.assets.features.FeaturesConfig",
    "orchestration.assets.serving.EmbeddingsConfig",
    "orchestration.assets.serving.PromotionConfig",
    "orchestration.assets.catalogue.RefreshConfig",
]

# Packages whose modules get an API reference page each (every public module, found by walking the folder).
API_PACKAGES = ["ampere", "orchestration"]
# ---------------------------------------------------------------------------------------------

import argparse  # noqa: E402
import ast  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mkdocs_gen_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["COLUMNS"] = "100"  # argparse wraps usage lines to the terminal: fixed, so the page is too
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def cell(text: Any) -> str:
    """Text for a Markdown table cell: one line, pipes and angle brackets escaped, this checkout's path
    written as the project folder."""
    text = " ".join(str(text).split()).replace(f" {ROOT})", ")").replace(str(ROOT), "the project folder")
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def code(text: Any) -> str:
    """An inline code span for a table cell (pipes escaped, which tables need even in code)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


# --- CLI reference ------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each sub-command of ``parser``, in the order they were added."""
    result = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            result += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return result


def option_rows(parser: argparse.ArgumentParser) -> list[str]:
    """Markdown table rows of a parser's arguments (sub-command groups and --help left out)."""
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = ", ".join(action.option_strings) if action.option_strings else action.metavar or action.dest
        if action.option_strings and action.nargs != 0:
            name += " " + (action.metavar or action.dest.upper())
        help_text = formatter._expand_help(action) if action.help else ""
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            help_text = (help_text + "; " if help_text else "") + "one of " + ", ".join(str(c) for c in action.choices)
        if action.required:
            help_text = "**required**" + ("; " + help_text if help_text else "")
        if isinstance(action, argparse._AppendAction) and "repeatable" not in help_text:
            help_text += " (repeatable)"
        default = action.default
        if (
            isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
            or default in (None, [], argparse.SUPPRESS)
            or "default" in help_text  # the help says it, often better than the value (e.g. "all cores")
        ):
            default_cell = ""
        else:
            default_cell = code(default)
        rows.append(f"| {code(name)} | {cell(help_text)} | {default_cell} |")
    return rows


def render_command(path: list[str], help_text: str, parser: argparse.ArgumentParser, origin: dict[str, str]) -> list[str]:
    """The section of one command and, after it, of its sub-commands."""
    lines = []
    subs = subcommands(parser)
    if len(path) > 1:
        level = "#" * min(len(path), 4)
        lines += [f"{level} `{' '.join(path)}`", ""]
        if path[1] in origin and len(path) == 2:
            lines += [f"*Defined in `{origin[path[1]]}`.*", ""]
        if help_text:
            lines += [help_text[0].upper() + help_text[1:] + ("" if help_text.endswith(".") else "."), ""]
    if parser.description and len(path) > 1:
        lines += [parser.description, ""]
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines += ["```text", usage, "```", ""]
    rows = option_rows(parser)
    if rows:
        lines += ["| option | help | default |", "|---|---|---|", *rows, ""]
    if subs:
        lines += ["Commands: " + ", ".join(f"`{' '.join([*path, name])}`" for name, _, _ in subs) + ".", ""]
    for name, sub_help, sub in subs:
        lines += render_command([*path, name], sub_help, sub, origin)
    return lines


def cli_page() -> str:
    with warnings.catch_warnings(record=True):  # import-time warnings of dependencies are not the docs'
        warnings.simplefilter("ignore")
        import ampere.cli
        import orchestration.cli

    library = {name for name, _, _ in subcommands(ampere.cli.build_parser())}
    parser = orchestration.cli.build_parser()
    origin = {name: "ampere.cli" if name in library else "orchestration.cli" for name, _, _ in subcommands(parser)}
    lines = [
        "# CLI reference",
        "",
        '!!! note "Generated"',
        "    This page is generated at build time from the argparse parsers (`ampere.cli.build_parser` and",
        "    `orchestration.cli.build_parser`) by `docs/gen_reference.py`: it is the `--help` of every",
        "    command, so it cannot drift from the code.",
        "",
        "The `ampere` console script is `orchestration.cli:main`: the library's own commands (`ampere.cli`, no",
        "Dagster) plus the commands that run or inspect the Dagster job (`orchestration.cli`).",
        "",
        "## `ampere`",
        "",
        parser.description or "",
        "",
    ]
    lines += render_command(["ampere"], "", parser, origin)
    return "\n".join(lines) + "\n"


# --- Configuration reference --------------------------------------------------------------------


@dataclasses.dataclass
class SourceField:
    """What the class body's source says about one field."""

    annotation: str | None = None
    default: str | None = None
    docstring: str | None = None
    comment: str | None = None


def source_fields(cls: type) -> dict[str, SourceField]:
    """Per field of ``cls``'s own body: its annotation, default expression, attribute docstring and the
    comment lines right above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    body = ast.parse(source).body[0].body
    result: dict[str, SourceField] = {}
    for i, node in enumerate(body):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        info = SourceField(annotation=ast.unparse(node.annotation))
        if node.value is not None:
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", "")) in ("field", "Field"):
                for keyword in value.keywords:
                    if keyword.arg == "default":
                        info.default = ast.unparse(keyword.value)
                    elif keyword.arg == "default_factory":
                        factory = keyword.value
                        info.default = ast.unparse(factory.body if isinstance(factory, ast.Lambda) else factory) + (
                            "" if isinstance(factory, ast.Lambda) else "()"
                        )
            elif isinstance(value, ast.Call):  # a field helper such as `_setting(env, doc, lambda s: ...)`
                lambdas = [a for a in [*value.args, *(k.value for k in value.keywords)] if isinstance(a, ast.Lambda)]
                if lambdas:
                    info.default = lambda_text(lambdas[-1])
                else:
                    info.default = ast.unparse(value)
            else:
                info.default = ast.unparse(value)
        following = body[i + 1] if i + 1 < len(body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            info.docstring = inspect.cleandoc(following.value.value)
        comments = []
        j = node.lineno - 2
        while j >= 0 and lines[j].strip().startswith("#"):
            comments.insert(0, lines[j].strip().lstrip("#").strip())
            j -= 1
        info.comment = " ".join(comments) or None
        result[node.target.id] = info
    return result


def lambda_text(node: ast.Lambda) -> str:
    """A default computed by a lambda: its body when it ignores its argument, else the whole lambda."""
    names = [a.arg for a in node.args.args]
    used = {n.id for n in ast.walk(node.body) if isinstance(n, ast.Name)}
    return ast.unparse(node.body) if not set(names) & used else ast.unparse(node)


def source_info(cls: type) -> dict[str, SourceField]:
    """``source_fields`` over the class and its bases: per attribute, the nearest class that says it wins
    (a subclass that only changes a default keeps its base's description)."""
    info: dict[str, SourceField] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.split(".")[0] not in {name.split(".")[0] for name in CONFIG_CLASSES}:
            continue
        for name, entry in source_fields(klass).items():
            merged = info.setdefault(name, SourceField())
            for attribute, value in vars(entry).items():
                if value is not None:
                    setattr(merged, attribute, value)
    return info


def metadata_doc(cls: type, name: str) -> str | None:
    """``metadata["doc"]`` of dataclass field ``name`` in ``cls`` or, failing that, its bases."""
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass):
            for f in dataclasses.fields(klass):
                if f.name == name and f.metadata.get("doc"):
                    return f.metadata["doc"]
    return None


def type_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and annotation.__module__ == "builtins":
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def defined_in(cls: type, name: str) -> str | None:
    """The base class that declares field ``name`` when it is not ``cls`` itself."""
    for klass in cls.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            return None if klass is cls else klass.__name__
    return None


def config_rows(cls: type) -> list[str]:
    info = source_info(cls)
    rows = []
    if dataclasses.is_dataclass(cls):
        entries = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = info.get(f.name, SourceField()).default or f"{f.default_factory.__name__}()"
            elif callable(f.metadata.get("default")):  # resolved by the class itself (e.g. Settings.resolve)
                default = info.get(f.name, SourceField()).default or "computed"
            else:
                default = None
            entries.append((f.name, f.type, default, metadata_doc(cls, f.name), f.metadata.get("env")))
    elif hasattr(cls, "model_fields"):
        entries = []
        for name, f in cls.model_fields.items():
            if f.default_factory is not None:
                default = info.get(name, SourceField()).default or f"{f.default_factory.__name__}()"
            elif f.is_required():
                default = None
            else:
                default = repr(f.default)
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            entries.append((name, f.annotation, default, f.description, extra.get("env")))
    else:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} is neither a dataclass nor a pydantic model")
    with_env = any(env for *_, env in entries)
    rows.append("| field | type | default |" + (" environment |" if with_env else "") + " description |")
    rows.append("|---|---|---|" + ("---|" if with_env else "") + "---|")
    for name, annotation, default, help_text, env in entries:
        source = info.get(name, SourceField())
        description = help_text or source.docstring or source.comment or ""
        base = defined_in(cls, name)
        if base:
            description += f" (from `{base}`)" if description else f"from `{base}`"
        annotation_text = source.annotation or type_name(annotation)
        default_cell = "*required*" if default is None else code(default)
        env_cell = (f" {code(env) if env else ''} |") if with_env else ""
        rows.append(f"| `{name}` | {code(annotation_text)} | {default_cell} |{env_cell} {cell(description)} |")
    return rows


def import_object(dotted: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    with warnings.catch_warnings(record=True):  # import-time warnings of dependencies (MLflow, Dagster betas) are not the docs'
        warnings.simplefilter("ignore")
        module = importlib.import_module(module_name)
    return getattr(module, attribute)


def configuration_page() -> str:
    lines = [
        "# Configuration reference",
        "",
        '!!! note "Generated"',
        "    This page is generated at build time by `docs/gen_reference.py` from the classes listed in its",
        "    `CONFIG_CLASSES`: each field's name, type and default come from the class itself, its description",
        '    from the field\'s `metadata["doc"]`, else its attribute docstring, else the',
        "    comment above it. Pydantic models (the assets' Dagster run config) are read from `model_fields`.",
        "",
        "Where a class is set from: `TrainConfig` is Dagster run config of `trained_encoder` and",
        "`ampere pipeline --train FIELD=VALUE`; `TaggerConfig` and the summarizer engine settings are fields of",
        "the `summarizer` resource; the classes under `orchestration.assets` are the run config of their asset",
        "(the Dagster UI's launchpad lists them). How settings such as the home and the stores are resolved is",
        "in [Operating](../operating.md#settings).",
        "",
    ]
    for dotted in CONFIG_CLASSES:
        cls = import_object(dotted)
        kind = "dataclass" if dataclasses.is_dataclass(cls) else "pydantic model"
        lines += [f"## `{cls.__name__}`", "", f"`{dotted}` ({kind})", ""]
        doc = inspect.getdoc(cls)
        if doc and not doc.startswith(cls.__name__ + "("):  # dataclasses invent a signature docstring
            lines += [doc, ""]
        lines += [*config_rows(cls), ""]
    return "\n".join(lines) + "\n"


# --- API reference ------------------------------------------------------------------------------


def api_modules(package: str) -> list[tuple[str, Path]]:
    """(dotted module name, source path) of every public module of ``package``, sorted by name (so a package
    comes before its modules)."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if "__pycache__" in parts or any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return sorted(found, key=lambda entry: entry[0])


def first_line(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except SyntaxError:
        return ""
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def api_pages(nav: list) -> None:
    index = [
        "# API reference",
        "",
        '!!! note "Generated"',
        "    One page per module, generated at build time by `docs/gen_reference.py` (which walks the package",
        "    folders) and rendered from the docstrings by mkdocstrings.",
        "",
        "`ampere` is the ML library (it never imports Dagster); `orchestration` is the Dagster code: assets,",
        "checks, resources, jobs, sensors and the `ampere` CLI's pipeline commands. How they fit together is on",
        "the [Concepts](../../concepts.md) page.",
        "",
    ]
    for package in API_PACKAGES:
        index += [f"## `{package}`", "", "| module | summary |", "|---|---|"]
        # nav: the package's own modules, then a section per sub-package (with everything below it)
        top: list = []
        sections: dict[str, list] = {}
        for module, path in api_modules(package):
            # Flat, one file per dotted name: a module called `index` (ampere.retrieval.index) or a package
            # beside its modules cannot collide with another page's URL.
            doc_path = Path("reference", "api", f"{module}.md")
            with mkdocs_gen_files.open(doc_path, "w") as page:
                page.write(f"::: {module}\n")
            mkdocs_gen_files.set_edit_path(doc_path, path.relative_to(ROOT))
            link = doc_path.relative_to("reference/api").as_posix()
            index.append(f"| [`{module}`]({link}) | {cell(first_line(path))} |")
            entry = {module: doc_path.as_posix()}
            parts = module.split(".")
            is_package = path.name == "__init__.py"
            if len(parts) > 2 or (len(parts) == 2 and is_package):
                sections.setdefault(".".join(parts[:2]), []).append(entry)
            else:
                top.append(entry)
        index.append("")
        nav.append({package: top + [{name: pages} for name, pages in sections.items()]})
    with mkdocs_gen_files.open("reference/api/index.md", "w") as page:
        page.write("\n".join(index) + "\n")
    nav.insert(0, "reference/api/index.md")


def api_nav_entry(nav: list) -> list | None:
    """The list under the nav's "API reference" entry (filled here), or None when the nav has none."""
    for entry in nav:
        if isinstance(entry, dict):
            for title, value in entry.items():
                if title == "API reference":
                    entry[title] = []
                    return entry[title]
                if isinstance(value, list):
                    found = api_nav_entry(value)
                    if found is not None:
                        return found
    return None


with mkdocs_gen_files.open("reference/cli.md", "w") as out:
    out.write(cli_page())
with mkdocs_gen_files.open("reference/configuration.md", "w") as out:
    out.write(configuration_page())
mkdocs_gen_files.set_edit_path("reference/cli.md", "docs/gen_reference.py")
mkdocs_gen_files.set_edit_path("reference/configuration.md", "docs/gen_reference.py")

# The nav's "API reference" entry is filled with the generated pages, one section per sub-package.
_nav = mkdocs_gen_files.config["nav"] or []
_api_nav = api_nav_entry(_nav)
api_pages(_api_nav if _api_nav is not None else [])
