"""Bundle trust: what a bundle from outside the shipped ones may make the package run, and how weights load.

A MONAI bundle config is code: every ``_target_`` is imported and called, every ``"$..."`` string is
given to ``eval``. DESIGN.md ("Errors and safety") draws the line:

- :func:`load_checkpoint`: weights load with ``torch.load(..., weights_only=True)`` in the package
  itself, whatever the bundle's config says (its ``load_weights`` expression is not evaluated by
  :func:`monai_sr.bundles.load_inference_parts`). A damaged file, a pickle with Python objects beyond
  tensors, or weights of another architecture give one line with the cause.
- :func:`check_config_trust`: a bundle that is not shipped in this repository's ``bundles/`` folder may
  only reach ``monai``, ``monai_sr`` and ``torch``, unless the user says they trust it (``--trust-bundle``,
  ``trust=True``). The check runs before anything of the config is evaluated and names the first
  offending ``_target_`` or expression with its config id.

What the check looks at, on the config after MONAI's macro (``%file#id``) and relative-id resolution:

- ``_target_``: a plain dotted name (or a bare name MONAI's locator finds in a ``monai*`` module),
  resolved here without calling anything; a reference or an expression there is refused (it would
  hide the name). ``_mode_: "debug"`` (MONAI runs pdb) is refused.
- ``"$..."`` expressions: parsed with :mod:`ast`. Imports must name modules of the three packages; a
  name must be an import of the config, ``monai``/``monai_sr``/``torch``, a reference (``@id``, checked
  where it is defined), a name the expression binds (lambda, comprehension) or a harmless builtin
  (``len``, ``print``, ``min``...; never ``eval``, ``getattr``, ``open``, ``__import__``). No attribute
  starting with ``_``. Every dotted chain is resolved on the real modules (no call): it must end in a
  module, class or function of the three packages (``torch.os.system`` is ``os.system`` and refused),
  and not in one of their known doors to arbitrary code: :data:`DENIED` (hub, C++ extensions, library
  loading, pickles, MONAI's module loaders and bundle runner, downloads, subprocesses).
  ``torch.load`` needs ``weights_only=True`` written in the call.

This is a policy on names, not a sandbox: inside the three packages a config can still do what their
public API does (e.g. write files with MONAI's savers). A bundle you did not get from a source you trust
is safe to run only in an isolated environment.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from monai_sr.errors import ModelError
from monai_sr.resources import BUNDLES, data_path

__all__ = ["ALLOWED_ROOTS", "DENIED", "SHIPPED_BUNDLES", "is_shipped_bundle", "check_config_trust", "load_checkpoint"]

ALLOWED_ROOTS = ("monai", "monai_sr", "torch")
#: The shipped bundles' folder (package data; the repository's ``bundles/`` in a checkout): bundles
#: directly in it are trusted.
SHIPPED_BUNDLES = data_path(BUNDLES).resolve()
#: Names inside the allowed packages that run arbitrary code, load native code, unpickle, download or
#: start processes; refused (with everything under them) in an untrusted bundle.
DENIED = (
    "torch.hub", "torch.utils.model_zoo", "torch.utils.cpp_extension", "torch.ops.load_library",
    "torch.classes.load_library", "torch.library", "torch.package", "torch.serialization", "torch.save",
    "torch.multiprocessing", "torch.distributed", "torch.utils.data.datapipes", "torch.jit.load",
    "torch.export.load", "torch.compile",
    "monai.bundle", "monai.apps", "monai.auto3dseg", "monai.fl", "monai.utils.module", "monai.utils.misc.run_cmd",
    "monai.utils.run_cmd", "monai.utils.optional_import", "monai.utils.instantiate", "monai.utils.locate",
    "monai.utils.load_submodules", "monai.utils.pytorch_after",
    "monai_sr.bundles", "monai_sr.bundle_trust", "monai_sr.cli", "monai_sr.io.pacs",
)
#: monai_sr.bundles' config helpers (used by the shipped configs) stay allowed.
_ALLOWED_EXCEPTIONS = ("monai_sr.bundles.as_bool", "monai_sr.bundles.as_mode", "monai_sr.bundles.config_bundle_root")
_SAFE_BUILTINS = frozenset(
    "abs all any bool dict divmod enumerate filter float frozenset int isinstance len list map max min "
    "pow print range reversed round set slice sorted str sum tuple zip None True False".split()
)
_REF = "__monai_sr_ref__"
_REF_PATTERN = re.compile(r"@(?:\w*)(?:(?:::|#)\w*)*")
_MISSING = object()


def is_shipped_bundle(root: str | os.PathLike) -> bool:
    """True for a bundle folder directly in the shipped bundles' folder (:data:`SHIPPED_BUNDLES`, symlinks resolved)."""
    return Path(root).resolve().parent == SHIPPED_BUNDLES


class _Untrusted(Exception):
    pass


def _denied(qualname: str) -> bool:
    if any(qualname == a or qualname.startswith(a + ".") for a in _ALLOWED_EXCEPTIONS):
        return False
    return any(qualname == d or qualname.startswith(d + ".") for d in DENIED)


def _qualname(obj: Any) -> str | None:
    """``module.qualname`` of a module, class or function; None for other objects."""
    if inspect.ismodule(obj):
        return obj.__name__
    if inspect.isclass(obj) or inspect.isroutine(obj):
        mod = getattr(obj, "__module__", None)
        if not isinstance(mod, str):
            return None
        return f"{mod}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    return None


def _judge(obj: Any, text: str, *, safe_load: bool = False) -> None:
    """Refuse ``obj`` (reached by the dotted ``text``) if it lies outside the allowed packages or is denied.
    ``safe_load``: ``obj`` is called with ``weights_only=True`` (then torch.load is allowed)."""
    if _is_torch_load(obj):
        if safe_load:
            return
        raise _Untrusted(f"{text} (torch.load is allowed only when called with weights_only=True)")
    if _denied(text):
        raise _Untrusted(f"{text} (it can run code beyond the bundle's configuration)")
    qual = _qualname(obj)
    if qual is None:
        if callable(obj) and not isinstance(obj, type):
            mod = type(obj).__module__
            if mod.split(".")[0] not in ALLOWED_ROOTS:
                raise _Untrusted(f"{text} (an object of {mod})")
        return  # a plain value (number, string, dtype...)
    root = qual.split(".")[0]
    if root not in ALLOWED_ROOTS:
        raise _Untrusted(f"{text} (it is {qual}, outside {', '.join(ALLOWED_ROOTS)})")
    if _denied(qual):
        raise _Untrusted(f"{text} (it is {qual}, which can run code beyond the bundle's configuration)")


def _import(module: str, text: str, *, deny: bool = True) -> Any:
    parts = module.split(".")
    if parts[0] not in ALLOWED_ROOTS:
        raise _Untrusted(f"{text} (module {module} is outside {', '.join(ALLOWED_ROOTS)})")
    if any(p.startswith("_") for p in parts):
        raise _Untrusted(f"{text} (a private module)")
    if deny and _denied(module):
        raise _Untrusted(f"{text} (module {module} can run code beyond the bundle's configuration)")
    try:
        return importlib.import_module(module)
    except Exception:
        raise _Untrusted(f"{text} (module {module} cannot be imported)") from None


def _resolve_dotted(name: str, *, safe_load: bool = False) -> Any:
    """Import the longest module prefix of ``name`` and walk the rest by attribute (nothing is called)."""
    parts = name.split(".")
    if any(not p or p.startswith("_") for p in parts):
        raise _Untrusted(f"{name} (a private or empty name)")
    if _denied(name):
        raise _Untrusted(f"{name} (it can run code beyond the bundle's configuration)")
    obj = _MISSING
    for i in range(len(parts), 0, -1):
        try:
            obj = _import(".".join(parts[:i]), name)
        except _Untrusted:
            if i == 1:
                raise
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                raise _Untrusted(f"{name} (not found)")
        break
    _judge(obj, name, safe_load=safe_load)
    return obj


class _Scope:
    """The names a config's expressions may use: its imports (shared by all expressions, as MONAI does)."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {root: _MISSING for root in ALLOWED_ROOTS}

    def add_imports(self, tree: ast.AST, text: str) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    mod = _import(alias.name, text)
                    if alias.asname:
                        self.names[alias.asname] = mod
                    else:
                        self.names[alias.name.split(".")[0]] = _MISSING
            elif isinstance(node, ast.ImportFrom):
                if node.level or not node.module:
                    raise _Untrusted(f"{text} (a relative import)")
                mod = _import(node.module, text, deny=False)  # each name imported is judged
                for alias in node.names:
                    if alias.name == "*" or alias.name.startswith("_"):
                        raise _Untrusted(f"{text} (imports {alias.name})")
                    obj = getattr(mod, alias.name, _MISSING)
                    if obj is _MISSING:
                        obj = _import(f"{node.module}.{alias.name}", text)
                    _judge(obj, f"{node.module}.{alias.name}")
                    self.names[alias.asname or alias.name] = obj


def _parse(expr: str, text: str) -> ast.AST:
    code = _REF_PATTERN.sub(_REF, expr[1:])
    try:
        return ast.parse(code.strip(), mode="exec")
    except SyntaxError:
        raise _Untrusted(f"{text} (not a Python expression)") from None


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ``["a", "b", "c"]`` for an attribute chain on a name; None otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _check_expression(tree: ast.AST, scope: _Scope, text: str) -> None:
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
              for a in (*n.posonlyargs, *n.args, *n.kwonlyargs, *(x for x in (n.vararg, n.kwarg) if x))}
    judged: set[int] = set()
    safe_calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call) and any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in n.keywords)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise _Untrusted(f"{text} (attribute {node.attr})")
            chain = _chain(node)
            if chain is None or id(node) in judged or chain[0] in bound or chain[0] == _REF:
                continue
            for sub in ast.walk(node):  # judge the longest chain only
                judged.add(id(sub))
            _resolve_chain(chain, scope, text, safe_load=id(node) in safe_calls)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            name = node.id
            if name == _REF or name in bound or name in _SAFE_BUILTINS:
                continue
            if name not in scope.names:
                what = "a builtin that can run or reach any code" if hasattr(builtins, name) else "not imported from monai, monai_sr or torch"
                raise _Untrusted(f"{text} (name {name}: {what})")
            if id(node) not in judged:
                _resolve_chain([name], scope, text)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            continue  # judged by _Scope.add_imports
        elif isinstance(node, (ast.Global, ast.Nonlocal, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            raise _Untrusted(f"{text} (a {type(node).__name__} statement)")


def _is_torch_load(obj: Any) -> bool:
    import torch

    return obj is torch.load


def _resolve_chain(chain: list[str], scope: _Scope, text: str, *, safe_load: bool = False) -> Any:
    head = scope.names.get(chain[0], _MISSING)
    if head is _MISSING:  # a package root: import it
        return _resolve_dotted(".".join(chain), safe_load=safe_load)
    obj, name = head, _qualname(head) or chain[0]
    for i, attr in enumerate(chain[1:], 2):
        name = f"{name}.{attr}"
        obj = getattr(obj, attr, _MISSING)
        if obj is _MISSING:
            return _MISSING  # an attribute of an instance made at run time: nothing to judge here
        _judge(obj, name, safe_load=safe_load and i == len(chain))
    if len(chain) == 1:
        _judge(obj, name, safe_load=safe_load)
    return obj


def _walk(config: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(id, key, value)`` of every entry, depth first."""
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        sub = f"{path}#{key}" if path else str(key)
        yield sub, key, value
        yield from _walk(value, sub)


def check_config_trust(config: Mapping[str, Any], source: str | os.PathLike) -> None:
    """Refuse (:class:`ModelError` naming ``source``, the config id and the target) a config that reaches
    beyond ``monai``, ``monai_sr`` and ``torch`` (see the module docstring). ``config``: the parsed
    config content, macros resolved. Nothing of it is evaluated."""
    try:
        scope = _Scope()
        entries = list(_walk(config))
        trees = []
        for cid, _, value in entries:
            if isinstance(value, str) and value.startswith("$"):
                text = f"{cid}: {value[:80]!s}"
                tree = _parse(value, text)
                scope.add_imports(tree, text)
                trees.append((tree, text, cid))
        for cid, key, value in entries:
            if key == "_target_":
                if not isinstance(value, str) or value[:1] in ("$", "@", "%"):
                    raise _Untrusted(f"{cid}: {value!r} (a _target_ must be a plain name to be checked)")
                if "." not in value:
                    from monai.bundle import ComponentLocator

                    module = ComponentLocator().get_component_module_name(value)
                    if not isinstance(module, str):
                        raise _Untrusted(f"{cid}: {value} (not a monai component)")
                    value = f"{module}.{value}"
                try:
                    _resolve_dotted(value)
                except _Untrusted as exc:
                    raise _Untrusted(f"{cid}: {exc}") from None
            elif key == "_mode_" and value == "debug":
                raise _Untrusted(f"{cid}: debug (MONAI runs pdb)")
        for tree, text, cid in trees:
            try:
                _check_expression(tree, scope, text)
            except _Untrusted as exc:
                raise _Untrusted(str(exc) if str(exc).startswith(text) else f"{cid}: {exc}") from None
    except _Untrusted as exc:
        raise ModelError(
            f"the bundle reaches beyond monai, monai_sr and torch: {exc}; run it only if you trust it "
            "(--trust-bundle, trust=True)", path=source) from None


# --- weights --------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def load_checkpoint(network: Any, path: str | os.PathLike) -> Any:
    """Load the weights at ``path`` into ``network`` with ``torch.load(..., weights_only=True)`` (onto the
    network's device) and a strict ``load_state_dict``; returns ``network``.

    The file holds a state dict, or a dict with one under ``"state_dict"``, ``"model"`` or ``"network"``
    (a training checkpoint). :class:`ModelError` naming ``path``, on one line: a missing, damaged or
    non-PyTorch file, a pickle with Python objects beyond tensors (refused: it could run code), weights
    of another architecture (the count and a first example of missing, unexpected and mis-shaped keys).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError("bundle weights not found", path=path)
    try:
        device = next(network.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and "unsupported global" in str(exc).lower():
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            raise ModelError(
                "the weights file holds Python objects beyond tensors"
                f"{f' ({found.group(1)})' if found else ''}; refused: loading it could run code "
                "(weights load with weights_only=True)", path=path) from None
        why = detail.group(1)[:200] if detail else _first_line(exc)  # not torch's advice to drop weights_only
        raise ModelError(f"cannot read the weights: not a PyTorch checkpoint or damaged ({type(exc).__name__}: "
                         f"{why})", path=path) from None
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model", "network"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"the weights file holds a {type(state).__name__}, not a state dict of tensors", path=path)
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                         f"{tuple(own[k].shape)} in the network)")
        raise ModelError(f"the weights do not fit the bundle's network {type(network).__name__}: "
                         f"{'; '.join(parts)} of {len(own)} tensors", path=path)
    try:
        network.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"the weights do not fit the bundle's network {type(network).__name__} "
                         f"({_first_line(exc)})", path=path) from None
    return network
