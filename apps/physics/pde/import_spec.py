"""The YAML spec of ``linmix-physics import``: which arrays of the user's mesh files become which sample channels.

```yaml
problem: heat                  # the app's problem whose channel layout the samples follow (PROBLEMS)
inputs:   {f: source}          # one entry per input channel of the problem (none for elasticity / flow)
fields:   {u: temperature}     # one entry per field channel
globals:  {kappa: 0.02}        # a number, {field_data: NAME} or {array: NAME} (a point array uniform over the mesh)
node_type: {array: node_type}  # or {cell_sets: ...}, {cell_tags: ...}, {rule: ...}: see below
dt: 0.05                       # transient problems: time between frames (checked against the files' times)
cell_data: refuse              # or average: an array given per cell is averaged onto the points (area-weighted)
```

A channel source is a point-data array name (``temperature``), one component of a vector array (``velocity[0]``), or
a mapping ``{array: velocity, component: 0, scale: 1.0, range: [lo, hi]}``: ``scale`` is an explicit unit conversion
(the value is multiplied and the report says so), ``range`` the values the channel may take in the spec's units (a
file outside it is refused: typically another unit). ``{computed: dirichlet_distance}`` is the distance of every node
to the nearest Dirichlet node (Darcy's ``dist_dirichlet`` input), computed from the mesh and node types.

Node types (0 interior, 1 dirichlet, 2 neumann, 3 obstacle; names or numbers):
- ``{array: NAME, map: {7: dirichlet, 9: obstacle}}``: a point array of integer codes (without ``map``: 0..3).
- ``{cell_sets: {dirichlet: [inlet, wall], obstacle: [cylinder]}, other_boundary: neumann}``: named cell sets
  (meshio ``cell_sets``, or Gmsh physical names); a node in several sets takes dirichlet over obstacle over neumann.
- ``{cell_tags: {array: "gmsh:physical", dirichlet: [1], obstacle: [3]}, other_boundary: neumann}``: integer tags
  of a cell-data array, same precedence.
- ``{rule: {outer: neumann, holes: obstacle, boxes: [{type: dirichlet, x: [null, 0.0]}]}}``: geometric: nodes of
  the outline (the boundary loop with the largest extent), nodes of the other loops (holes), then outline nodes inside
  each box (``x`` / ``y`` bounds, ``null`` = open; later boxes win) get the box's type.
Boundary nodes no set / tag names get ``other_boundary`` (default neumann); all other nodes are interior.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from linmix.apps.physics.pde.sample_io import PROBLEMS
from linmix.shared.errors import UserError

TYPE_NAMES = {"interior": 0, "dirichlet": 1, "neumann": 2, "obstacle": 3}
PRECEDENCE = (2, 3, 1)  # later wins: neumann < obstacle < dirichlet
COMPUTED = ("dirichlet_distance",)
_COMPONENT = re.compile(r"^(.+)\[(\d+)\]$")


@dataclass(frozen=True)
class ChannelSource:
    """Where one channel's values come from: ``array`` (+ ``component``), or ``computed``."""

    array: Optional[str] = None
    component: Optional[int] = None
    scale: float = 1.0
    range: Optional[tuple] = None
    computed: Optional[str] = None

    def describe(self) -> str:
        if self.computed:
            return f"computed {self.computed}"
        return f"{self.array}" + (f"[{self.component}]" if self.component is not None else "")


@dataclass(frozen=True)
class GlobalSource:
    """One global parameter: a ``value``, a ``field_data`` entry or a uniform point ``array`` (+ ``component``)."""

    value: Optional[float] = None
    field_data: Optional[str] = None
    array: Optional[str] = None
    component: Optional[int] = None


@dataclass(frozen=True)
class NodeTypeSource:
    """``kind`` array | cell_sets | cell_tags | rule; see the module docstring."""

    kind: str
    array: Optional[str] = None
    codes: dict = field(default_factory=dict)  # array: code -> type; cell_tags: tag -> type
    sets: dict = field(default_factory=dict)  # cell_sets: name -> type
    other_boundary: int = 2
    outer: int = 2
    holes: int = 3
    boxes: tuple = ()  # ((type, (xlo, xhi), (ylo, yhi)), ...)


@dataclass(frozen=True)
class ImportSpec:
    """A parsed, checked spec (:func:`load_spec`). ``inputs`` / ``fields`` / ``globals`` in the problem's order."""

    problem: str
    inputs: tuple
    fields: tuple
    globals: tuple
    node_type: NodeTypeSource
    dt: Optional[float] = None
    cell_data: str = "refuse"

    @property
    def transient(self) -> bool:
        return PROBLEMS[self.problem].transient


def _err(where: str, msg: str) -> UserError:
    return UserError(f"{where}: {msg}")


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(where, f"must be a finite number, got {value!r}")
    return float(value)


def _type(value, where: str) -> int:
    if isinstance(value, str) and value.lower() in TYPE_NAMES:
        return TYPE_NAMES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3:
        return value
    raise _err(where, f"node type must be one of {list(TYPE_NAMES)} or 0..3, got {value!r}")


def _keys(d: dict, allowed: set, where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise _err(where, f"unknown keys {extra}; expected some of {sorted(allowed)}")


def _channel(value, where: str) -> ChannelSource:
    if isinstance(value, str):
        m = _COMPONENT.match(value.strip())
        return ChannelSource(array=m.group(1), component=int(m.group(2))) if m else ChannelSource(array=value.strip())
    if not isinstance(value, dict):
        raise _err(where, f"expected an array name, NAME[k] or a mapping {{array, component, scale, range}}, got "
                          f"{value!r}")
    _keys(value, {"array", "component", "scale", "range", "computed"}, where)
    if "computed" in value:
        if value["computed"] not in COMPUTED or len(value) > 1:
            raise _err(where, f"computed must be one of {list(COMPUTED)}, alone; got {value!r}")
        return ChannelSource(computed=value["computed"])
    if not isinstance(value.get("array"), str) or not value["array"]:
        raise _err(where, f"array must name a point-data array, got {value.get('array')!r}")
    comp = value.get("component")
    if comp is not None and (isinstance(comp, bool) or not isinstance(comp, int) or comp < 0):
        raise _err(where, f"component must be an integer >= 0, got {comp!r}")
    scale = _number(value.get("scale", 1.0), f"{where}.scale")
    if scale == 0:
        raise _err(where, "scale must not be 0")
    rng = value.get("range")
    if rng is not None:
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise _err(where, f"range must be [lo, hi], got {rng!r}")
        rng = (_number(rng[0], f"{where}.range"), _number(rng[1], f"{where}.range"))
        if rng[0] > rng[1]:
            raise _err(where, f"range must be [lo, hi] with lo <= hi, got {list(rng)}")
    return ChannelSource(array=value["array"], component=comp, scale=scale, range=rng)


def _named(section, names: tuple, where: str, parse) -> tuple:
    section = {} if section is None else section
    if not isinstance(section, dict):
        raise _err(where, f"must be a mapping channel -> source, got {section!r}")
    missing, extra = [n for n in names if n not in section], sorted(set(section) - set(names))
    if missing or extra:
        raise _err(where, f"the problem's channels are {list(names)}; missing {missing}, unknown {extra}")
    return tuple(parse(section[n], f"{where}.{n}") for n in names)


def _global(value, where: str) -> GlobalSource:
    if isinstance(value, dict):
        _keys(value, {"field_data", "array", "component"}, where)
        if ("field_data" in value) == ("array" in value):
            raise _err(where, f"give a number, {{field_data: NAME}} or {{array: NAME}}, got {value!r}")
        if "field_data" in value:
            return GlobalSource(field_data=str(value["field_data"]))
        ch = _channel({k: v for k, v in value.items()}, where)
        return GlobalSource(array=ch.array, component=ch.component)
    if isinstance(value, str):
        ch = _channel(value, where)
        return GlobalSource(array=ch.array, component=ch.component)
    return GlobalSource(value=_number(value, where))


def _bounds(value, where: str) -> tuple:
    if value is None:
        return (-math.inf, math.inf)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _err(where, f"must be [lo, hi] (null for open), got {value!r}")
    lo = -math.inf if value[0] is None else _number(value[0], where)
    hi = math.inf if value[1] is None else _number(value[1], where)
    return (lo, hi)


def _node_type(value, where: str) -> NodeTypeSource:
    kinds = ("array", "cell_sets", "cell_tags", "rule")
    if not isinstance(value, dict) or sum(k in value for k in kinds) != 1:
        raise _err(where, f"must be a mapping with exactly one of {list(kinds)}, got {value!r}")
    other = _type(value.get("other_boundary", "neumann"), f"{where}.other_boundary")
    if "array" in value:
        _keys(value, {"array", "map"}, where)
        codes = {}
        for code, t in (value.get("map") or {}).items():
            if isinstance(code, bool) or not isinstance(code, int):
                raise _err(f"{where}.map", f"codes must be integers, got {code!r}")
            codes[code] = _type(t, f"{where}.map.{code}")
        return NodeTypeSource("array", array=str(value["array"]), codes=codes)
    if "cell_sets" in value:
        _keys(value, {"cell_sets", "other_boundary"}, where)
        sets = {}
        for t, names in (value["cell_sets"] or {}).items():
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise _err(f"{where}.cell_sets.{t}", f"must be a list of set names, got {names!r}")
            sets.update({n: _type(t, f"{where}.cell_sets") for n in names})
        if not sets:
            raise _err(f"{where}.cell_sets", "names no set")
        return NodeTypeSource("cell_sets", sets=sets, other_boundary=other)
    if "cell_tags" in value:
        _keys(value, {"cell_tags", "other_boundary"}, where)
        tags = dict(value["cell_tags"] or {})
        array = tags.pop("array", None)
        if not isinstance(array, str):
            raise _err(f"{where}.cell_tags", "needs array: the cell-data array of integer tags (e.g. gmsh:physical)")
        codes = {}
        for t, lst in tags.items():
            lst = [lst] if isinstance(lst, int) else lst
            if not isinstance(lst, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in lst):
                raise _err(f"{where}.cell_tags.{t}", f"must be a list of integer tags, got {lst!r}")
            codes.update({x: _type(t, f"{where}.cell_tags") for x in lst})
        if not codes:
            raise _err(f"{where}.cell_tags", "names no tag")
        return NodeTypeSource("cell_tags", array=array, codes=codes, other_boundary=other)
    _keys(value, {"rule"}, where)
    rule = value["rule"] or {}
    if not isinstance(rule, dict):
        raise _err(f"{where}.rule", f"must be a mapping {{outer, holes, boxes}}, got {rule!r}")
    _keys(rule, {"outer", "holes", "boxes"}, f"{where}.rule")
    boxes = []
    for i, b in enumerate(rule.get("boxes") or []):
        w = f"{where}.rule.boxes[{i}]"
        if not isinstance(b, dict) or "type" not in b:
            raise _err(w, f"must be {{type, x: [lo, hi], y: [lo, hi]}}, got {b!r}")
        _keys(b, {"type", "x", "y"}, w)
        boxes.append((_type(b["type"], w), _bounds(b.get("x"), f"{w}.x"), _bounds(b.get("y"), f"{w}.y")))
    return NodeTypeSource("rule", outer=_type(rule.get("outer", "neumann"), f"{where}.rule.outer"),
                          holes=_type(rule.get("holes", "obstacle"), f"{where}.rule.holes"), boxes=tuple(boxes))


def parse_spec(raw, where: str = "spec") -> ImportSpec:
    """Check a spec mapping (as read from YAML) and return an :class:`ImportSpec`; :class:`UserError` naming the key
    for anything else."""
    if not isinstance(raw, dict):
        raise _err(where, f"must be a mapping, got {type(raw).__name__}")
    _keys(raw, {"problem", "inputs", "fields", "globals", "node_type", "dt", "cell_data"}, where)
    problem = raw.get("problem")
    if problem not in PROBLEMS:
        raise _err(f"{where}.problem", f"must be one of {sorted(PROBLEMS)}, got {problem!r} (another channel "
                                       "layout needs an entry in PROBLEMS, pde/sample_io.py)")
    p = PROBLEMS[problem]
    if "node_type" not in raw:
        raise _err(where, "node_type is required: {array: ...}, {cell_sets: ...}, {cell_tags: ...} or {rule: ...}")
    dt = raw.get("dt")
    if dt is not None:
        dt = _number(dt, f"{where}.dt")
        if dt <= 0:
            raise _err(f"{where}.dt", f"must be > 0, got {dt}")
        if not p.transient:
            raise _err(f"{where}.dt", f"{problem} is steady: give no dt")
    cell_data = raw.get("cell_data", "refuse")
    if cell_data not in ("refuse", "average"):
        raise _err(f"{where}.cell_data", f"must be refuse or average, got {cell_data!r}")
    return ImportSpec(problem=problem, inputs=_named(raw.get("inputs"), p.inputs, f"{where}.inputs", _channel),
                      fields=_named(raw.get("fields"), p.channels, f"{where}.fields", _channel),
                      globals=_named(raw.get("globals"), p.globals, f"{where}.globals", _global),
                      node_type=_node_type(raw["node_type"], f"{where}.node_type"), dt=dt, cell_data=cell_data)


def load_spec(path: str | Path) -> ImportSpec:
    """Read and check the YAML spec at ``path``."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read the spec ({exc.strerror or type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_spec(raw, where=str(path))
