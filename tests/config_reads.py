"""Which config keys the code reads, decided statically with `ast` (for tests/test_config_keys.py).

A key counts as read only where the code reads that setting, never because another key has the
same last name (`lr` is the last name of eleven keys, and read as `fer.lr` too):

1. Typed reads. The section class of a value is known from annotations (`optim: StageOptim`,
   `cfg: TrainConfig`, a dataclass field `optim: StageOptim`, a function's return type), from
   assignments (`c = cfg.cm_arr`, `self.stage = ...`), loops over annotated containers, and from
   the schema itself (`cfg.train` is a TrainConfig, `cfg.train.cm_arr` a CMARRConfig). Reading field
   `f` on a value of section class C (`optim.lr`, `getattr(optim, "lr")`) reads C.f. Key `P.f`, where
   section P has class C, is read when C.f is read *and* P is read on its parent (`c.optim` on a
   CMARRConfig), up to the root: sections are handed around whole, so the stage trainer's
   `stage.optim.lr` reads the `lr` of every StageOptim section some system reads and hands to a
   stage, and of none that nothing reads.
2. Untyped chains. An attribute chain on a value of unknown type covers the keys and sections whose
   dotted path ends in the chain's trailing config names, when there are at least two of them:
   `x.optim.lr` covers every `*.optim.lr` (not `*.pretrain.lr`, nor `fer.lr`); `x.lr` covers nothing.

Not reads: dotted key strings (`"train.cm_arr.optim.lr"` is written by presets and `--set`, never
read back by name), `model_dump()` (records a section, uses none of it), and the schema's own
definitions (their files are read only for types).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cmarr.shared.config import PipelineConfig, config_keys
from cmarr.shared.train_config import SECTIONS, TrainConfig
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("extract", "train", "shared", "predict")
DEFINITIONS = {ROOT / "shared" / "config.py", ROOT / "shared" / "train_config.py", ROOT / "shared" / "sections.py"}
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
Site = tuple[str, int, int]  # file, line, column of a read


@dataclass
class Schema:
    """The config's sections by dotted path ('' is the root) with their class names, each class's
    fields (the section class a field holds, None for a value), and every key."""

    paths: dict[str, str] = field(default_factory=dict)
    fields: dict[str, dict[str, str | None]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    @classmethod
    def of_config(cls) -> Schema:
        """The schema of `PipelineConfig` with the system sections registered so far."""
        schema, classes = cls({"": PipelineConfig.__name__}, {}, config_keys()), {}

        def walk(model: type[BaseModel], prefix: str) -> None:
            assert classes.setdefault(model.__name__, model) is model, f"two section classes named {model.__name__}"
            names = {n: f.annotation for n, f in model.model_fields.items()}
            names.update(SECTIONS if model is TrainConfig else {})
            schema.fields[model.__name__] = {}
            for name, annotation in names.items():
                sub = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
                schema.fields[model.__name__][name] = sub.__name__ if sub else None
                if sub:
                    schema.paths[prefix + name] = sub.__name__
                    walk(sub, f"{prefix}{name}.")

        walk(PipelineConfig, "")
        return schema


def annotation_type(node: ast.expr | None) -> str | None:
    """The class an annotation names: `X | None` is X, a container stands for its elements
    (`tuple[Stage, ...]`, `dict[str, StageDir]`), so iterating or indexing it gives an element."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return None
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return annotation_type(node.left) or annotation_type(node.right)
    if isinstance(node, ast.Subscript):
        inner = node.slice
        if isinstance(inner, ast.Tuple):
            elements = [e for e in inner.elts if not (isinstance(e, ast.Constant) and e.value is Ellipsis)]
            inner = elements[-1] if elements else None
        return annotation_type(inner)
    return None


def module_name(where: str) -> str:
    """extract/pipeline.py -> cmarr.extract.pipeline; a package's __init__.py -> the package."""
    parts = where.removesuffix(".py").split("/")
    return ".".join(["cmarr", *(parts[:-1] if parts[-1] == "__init__" else parts)])


class Types:
    """What the code declares: the schema's sections, other classes' annotated attributes (and the
    attributes their methods assign), properties' and functions' return types, imports."""

    def __init__(self, schema: Schema):
        self.sections = schema.fields
        self.classes: set[str] = set()
        self.attrs: dict[str, dict[str, str | None]] = defaultdict(dict)
        self.methods: dict[str, dict[str, str | None]] = defaultdict(dict)
        self.properties: dict[str, set[str]] = defaultdict(set)
        self.bases: dict[str, list[str]] = defaultdict(list)
        self.functions: dict[str, dict[str, str | None]] = defaultdict(dict)  # module -> function -> returns
        self.imports: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)  # module -> name -> its source

    def declare(self, module: str, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                self.classes.add(node.name)
                self.bases[node.name] += [b for b in map(annotation_type, node.bases) if b]
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        self.attr_type(node.name, item.target.id, annotation_type(item.annotation))
                    elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.methods[node.name][item.name] = annotation_type(item.returns)
                        if any(annotation_type(d) == "property" for d in item.decorator_list):
                            self.properties[node.name].add(item.name)
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.imports[module][alias.asname or alias.name] = (node.module, alias.name)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[module][node.name] = annotation_type(node.returns)

    def attr_type(self, cls: str, name: str, t: str | None) -> None:
        """`cls().name` holds a `t`; classes of one name (in two modules) that disagree give None."""
        if t is not None:
            self.attrs[cls][name] = t if self.attrs[cls].get(name, t) == t else None

    def function(self, module: str, name: str) -> str | None:
        """The return type of the function `name` as `module` sees it (its own or imported)."""
        if name in self.functions[module]:
            return self.functions[module][name]
        source, original = self.imports[module].get(name, ("", ""))
        return self.functions.get(source, {}).get(original)

    def _lineage(self, cls: str) -> list[str]:
        seen, todo = [], [cls]
        while todo:
            c = todo.pop()
            if c not in seen:
                seen.append(c)
                todo += self.bases.get(c, [])
        return seen

    def attribute(self, cls: str | None, name: str) -> str | None:
        if cls in self.sections:
            return self.sections[cls].get(name)
        for c in self._lineage(cls) if cls else []:
            if name in self.attrs.get(c, {}):
                return self.attrs[c][name]
            if name in self.properties.get(c, set()):
                return self.methods[c][name]
        return None

    def method(self, cls: str | None, name: str) -> str | None:
        if cls in self.sections and name == "model_copy":
            return cls
        for c in self._lineage(cls) if cls else []:
            if name in self.methods.get(c, {}):
                return self.methods[c][name]
        return None


def own_nodes(scope: ast.AST):
    """The nodes of `scope` outside its nested functions, lambdas and classes (their decorators and
    default values belong to `scope`)."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, SCOPES):
            todo += ast.iter_child_nodes(node)
        elif not isinstance(node, ast.Lambda):
            todo += node.decorator_list
            if not isinstance(node, ast.ClassDef):
                todo += [d for d in node.args.defaults + node.args.kw_defaults if d is not None]


class Reads:
    """The reads of config sections and keys in `modules` ([(path relative to ROOT, tree)]), with
    the types `definitions` declare too; reads at the sites in `skip` are left out (tests)."""

    def __init__(self, schema: Schema, modules, definitions=(), skip: frozenset[Site] = frozenset()):
        self.schema, self.skip = schema, skip
        self.types = Types(schema)
        self.components = {c for p in [*schema.keys, *schema.paths] for c in p.split(".") if c}
        for where, tree in [*modules, *definitions]:
            self.types.declare(module_name(where), tree)
        for _ in range(3):  # attributes assigned in one method type reads in others: settle them
            self.by_class: dict[tuple[str, str], list[Site]] = defaultdict(list)  # (class, field) -> sites
            self.by_path: dict[str, list[Site]] = defaultdict(list)  # key or section path -> untyped sites
            for where, tree in modules:
                self.where, self.module = where, module_name(where)
                self._visit(tree, {}, None)

    def evidence(self, path: str) -> list[Site]:
        """Where key or section `path` is read (rule 1 with its sections' reads, or rule 2); [] if nowhere."""
        if path in self.by_path:
            return self.by_path[path]
        parent, _, name = path.rpartition(".")
        found = self.by_class.get((self.schema.paths[parent], name), [])
        if not found or not parent:
            return found
        above = self.evidence(parent)
        return found + above if above else []

    def own_sites(self, key: str) -> set[Site]:
        """The sites that read `key`'s own field (not its sections): what deleting its reads deletes."""
        parent, _, name = key.rpartition(".")
        return {*self.by_path.get(key, []), *self.by_class.get((self.schema.paths[parent], name), [])}

    # ------------------------------------------------------------------ types of expressions
    def _type(self, node: ast.expr, env: dict[str, str]) -> str | None:
        t = self.types
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            return t.attribute(self._type(node.value, env), node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            return t.method(self._type(node.func.value, env), node.func.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if (got := _getattr(node)) is not None:
                return t.attribute(self._type(got[0], env), got[1])
            known = node.func.id in t.classes or node.func.id in t.sections
            return node.func.id if known else t.function(self.module, node.func.id)
        if isinstance(node, (ast.Subscript, ast.Starred, ast.NamedExpr)):
            return self._type(node.value, env)
        if isinstance(node, ast.IfExp):
            node = ast.BoolOp(ast.Or(), [node.body, node.orelse])
        if isinstance(node, ast.BoolOp):  # `a or b`, `a if c else b`: the type both have
            found = {self._type(v, env) for v in node.values}
            return found.pop() if len(found) == 1 else None
        return None

    def _bind(self, target: ast.expr, value: ast.expr, env: dict[str, str], iterating: bool = False) -> None:
        """Give what `target = value` (or `for target in value`) binds the value's type."""
        if isinstance(target, ast.Name) and (t := self._type(value, env)):
            env[target.id] = t
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
            if env.get("self") not in (None, *self.types.sections):
                self.types.attr_type(env["self"], target.attr, self._type(value, env))
        elif isinstance(target, (ast.Tuple, ast.List)):
            for a, b in _pairs(target.elts, value, iterating):
                self._bind(a, b, env)

    def _env(self, scope: ast.AST, outer: dict[str, str], owner: str | None) -> dict[str, str]:
        """Types of the names in `scope`: its parameters' annotations (a method's first one is its
        class), then what it assigns, twice (an assignment may use a later one's name)."""
        env = dict(outer)
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = scope.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
            for p in params + [x for x in (a.vararg, a.kwarg) if x]:
                env.pop(p.arg, None)
                if t := annotation_type(p.annotation):
                    env[p.arg] = t
            static = isinstance(scope, ast.Lambda) or "staticmethod" in map(annotation_type, scope.decorator_list)
            if owner and params and not static:
                env[params[0].arg] = owner
        for _ in range(2):
            for node in own_nodes(scope):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        self._bind(target, node.value, env)
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    if t := annotation_type(node.annotation):
                        env[node.target.id] = t
                elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                    self._bind(node.target, node.iter, env, iterating=True)
                elif isinstance(node, ast.NamedExpr):
                    self._bind(node.target, node.value, env)
        return env

    # ------------------------------------------------------------------ reads
    def _visit(self, scope: ast.AST, outer: dict[str, str], owner: str | None) -> None:
        env = self._env(scope, outer, owner)
        for node in own_nodes(scope):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                self._read(node.value, node.attr, node, env)
            elif isinstance(node, ast.Call) and (got := _getattr(node)) is not None:
                self._read(*got, node, env)
            if isinstance(node, SCOPES):  # a class body's names are not its methods' names
                inner = (outer, owner) if isinstance(scope, ast.ClassDef) else (env, None)
                self._visit(node, *((env, node.name) if isinstance(node, ast.ClassDef) else inner))

    def _read(self, value: ast.expr, name: str, node: ast.AST, env: dict[str, str]) -> None:
        site = (self.where, node.lineno, node.col_offset)
        if site in self.skip:
            return
        receiver = self._type(value, env)
        if receiver in self.types.sections:  # rule 1
            if name in self.types.sections[receiver]:
                self.by_class[(receiver, name)].append(site)
            return
        chain = [name]  # rule 2: the chain's trailing config names
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        tail = []
        while chain and chain[-1] in self.components:
            tail.insert(0, chain.pop())
        if len(tail) >= 2:
            dotted = ".".join(tail)
            for path in [*self.schema.keys, *self.schema.paths]:
                if path == dotted or path.endswith("." + dotted):
                    self.by_path[path].append(site)


def _pairs(targets: list[ast.expr], value: ast.expr, iterating: bool) -> list[tuple[ast.expr, ast.expr]]:
    """(target, expression of its type) of an unpacking: `a, b = x, y`; in a loop `k, v in d.items()`,
    `i, v in enumerate(xs)`, `a, b in zip(xs, ys)` (a container's type is its elements')."""
    if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(targets):
        return list(zip(targets, value.elts))
    if not (iterating and isinstance(value, ast.Call)):
        return []
    f, args = value.func, value.args
    if isinstance(f, ast.Attribute) and f.attr == "items" and len(targets) == 2:
        return [(targets[1], f.value)]
    if isinstance(f, ast.Name) and f.id == "enumerate" and args and len(targets) == 2:
        return [(targets[1], args[0])]
    if isinstance(f, ast.Name) and f.id == "zip" and len(args) == len(targets):
        return list(zip(targets, args))
    return []


def _getattr(node: ast.Call) -> tuple[ast.expr, str] | None:
    """(obj, name) of `getattr(obj, "name"...)`."""
    if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2:
        name = node.args[1]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            return node.args[0], name.value
    return None


def parse_packages() -> tuple[list, list]:
    """([(path, tree)] of the code, [(path, tree)] of the schema's definitions) under PACKAGES."""
    code, definitions = [], []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parsed = (str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path)))
            (definitions if path in DEFINITIONS else code).append(parsed)
    return code, definitions
