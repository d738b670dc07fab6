"""The wire codec: versioned msgpack encoding of frozen attrs message classes.

Every message on the wire is one msgpack array::

    [WIRE_VERSION, tag, field_1, field_2, ...]

``tag`` is a small integer registered once per message class (see ``docs/wire.md``
for the allocation of tag ranges to protocols). Fields are encoded in declaration
order; nested message classes are encoded as arrays of their fields (without tag).

Compatibility across versions (docs/wire.md): a message class may gain fields only
at its end, each with a default, and never loses, renames or reorders one. A decoder
fills the missing trailing fields of an older sender's message with their defaults
and ignores the extra trailing fields of a newer sender's, so nodes of neighbouring
versions talk during a rolling upgrade. A field an older node must not ignore calls
for a new message (a new tag), not a new field.

Decoding untrusted bytes raises only :class:`WireError`. Sizes are checked before
anything is allocated: the input length is capped by the caller's budget and
msgpack's container limits are tied to the input length, so a short packet cannot
claim a huge array. Every field is type-checked against the class's annotations.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import msgpack

WIRE_VERSION = 1

#: Hard cap on one encoded message (stream frames). Datagrams are smaller still.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Every ``int`` field on the wire lies in ``[0, MAX_WIRE_INT]`` unless its class
#: declares another range with :func:`int_range`. The bound is a signed 64-bit
#: integer (what msgpack, SQLite ``INTEGER`` and every peer can hold); protocols keep
#: their own counters (terms, incarnations, Lamport times) well below it, so one
#: more increment always still encodes and stores.
MAX_WIRE_INT = 2**63 - 1
MIN_WIRE_INT = -(2**63)

_RANGE_KEY = "wire_range"


def int_range(lo: int, hi: int = MAX_WIRE_INT) -> dict[str, tuple[int, int]]:
    """Field metadata declaring the inclusive range a decoded ``int`` field must lie in::

        conflict_term: int = attrs.field(default=-1, metadata=wire.int_range(-1))
    """
    if not MIN_WIRE_INT <= lo <= hi <= MAX_WIRE_INT:
        raise ValueError(f"bad wire range [{lo}, {hi}]")
    return {_RANGE_KEY: (lo, hi)}


class WireError(ValueError):
    """Bytes that are not a valid clusterfunk message (the only error decoding raises)."""


T = TypeVar("T")

_BY_TAG: dict[int, type] = {}
_TAG_OF: dict[type, int] = {}
_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {}
_DECODERS: dict[type, Callable[[Any], Any]] = {}
#: per tagged class: the whole message as a list (version and tag first), and its
#: decoder from the whole decoded list (version and tag already checked)
_TOP_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {}
_TOP_DECODERS: dict[int, Callable[[list[Any]], Any]] = {}
#: classes whose decoded instances are deeply immutable (see :func:`is_immutable`)
_IMMUTABLE: dict[type, bool] = {}


def message(tag: int) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a frozen attrs class as a wire message with ``tag``.

    Apply it *outside* ``@attrs.frozen``::

        @wire.message(20)
        @attrs.frozen
        class Ping:
            seq: int
    """

    def register(cls: type[T]) -> type[T]:
        if not (0 < tag < 65536):
            raise ValueError(f"wire tag out of range: {tag}")
        if tag in _BY_TAG and _BY_TAG[tag] is not cls:
            raise ValueError(f"wire tag {tag} already used by {_BY_TAG[tag].__qualname__}")
        _compile(cls, tag)
        _BY_TAG[tag] = cls
        _TAG_OF[cls] = tag
        return cls

    return register


def struct(cls: type[T]) -> type[T]:
    """Register a frozen attrs class usable as a *nested* field (no tag of its own)."""
    _compile(cls)
    return cls


def registered_tags() -> dict[int, type]:
    """A copy of the tag registry (for documentation and tests)."""
    return dict(sorted(_BY_TAG.items()))


def registered_structs() -> list[type]:
    """The nested classes (no tag) the codec knows, by module and name (for
    documentation and the compatibility record)."""
    return sorted((c for c in _ENCODERS if c not in _TAG_OF),
                  key=lambda c: f"{c.__module__}.{c.__qualname__}")


def is_immutable(cls: type) -> bool:
    """Whether decoded instances of the registered class ``cls`` are deeply immutable:
    a frozen class whose fields are ``int``, ``float``, ``str``, ``bytes``, ``bool``,
    ``None``, optionals and tuples of those, and nested classes of the same kind (no
    ``dict``, no ``Any``). Equal bytes decode to equal instances, so one decoded
    instance of such a class can stand for every decode of the same bytes."""
    return _IMMUTABLE.get(cls, False)


# ---------------------------------------------------------------------------
# Compilation of per-class encoders and validating decoders.


_PRIMITIVE_NAMES = {int: "int", str: "str", bytes: "bytes", bool: "bool"}


def _compile(cls: type, tag: int | None = None) -> None:
    """Generate a straight-line encoder and a validating decoder for ``cls``.

    The generated code checks primitive fields inline (``type(v) is int`` and its
    range, ``bool`` never accepted for ``int``, floats finite) and calls a
    converter only for composite fields, which keeps decoding of large push-pull
    states and log batches cheap. For a tagged class (``tag``) it also generates the
    encoder of the whole message and the decoder from the whole decoded list.

    A decoded instance is built by its class's ``__init__``, or, for a plain frozen
    slotted class (no validators, converters, hooks, defaults-only fields or hash
    cache: an ``__init__`` that only stores each argument in its slot), by storing
    the checked values into a new instance's slots directly: the same object the
    ``__init__`` would make, without its frozen-class ``object.__setattr__`` calls.
    """
    if cls in _ENCODERS and (tag is None or _TAG_OF.get(cls) == tag):
        return
    if not attrs.has(cls):
        raise TypeError(f"{cls!r} is not an attrs class")
    attrs.resolve_types(cls)
    fields = attrs.fields(cls)
    cname = cls.__name__
    n = len(fields)
    ns: dict[str, Any] = {
        "_cls": cls, "_E": WireError, "int": int, "float": float, "_fin": math.isfinite,
        "_new": object.__new__,
    }

    parts = []
    for i, f in enumerate(fields):
        conv = _encoder_for(f.type)
        if conv is None:
            parts.append(f"obj.{f.name}")
        else:
            ns[f"_e{i}"] = conv
            parts.append(f"_e{i}(obj.{f.name})")
    enc_src = f"def encode(obj):\n    return [{', '.join(parts)}]\n"
    if tag is not None:
        enc_src += f"def encode_top(obj):\n    return [{WIRE_VERSION}, {tag}, {', '.join(parts)}]\n"

    names = [f"f{i}" for i in range(n)]
    checks: list[str] = []
    immutable = bool(cls.__attrs_props__.is_frozen)  # type: ignore[attr-defined]
    for i, f in enumerate(fields):
        v = names[i]
        where = f"{cname}.{f.name}"
        tp = f.type
        if _RANGE_KEY in f.metadata and tp is not int:
            raise TypeError(f"{where}: int_range on a field that is not an int")
        if not _immutable_type(tp):
            immutable = False
        if tp is int:
            lo, hi = f.metadata.get(_RANGE_KEY, (0, MAX_WIRE_INT))
            checks.append(f"    if type({v}) is not int:")
            checks.append(f"        raise _E('{where}: expected int')")
            checks.append(f"    if not {lo} <= {v} <= {hi}:")
            checks.append(f"        raise _E('{where}: out of range [{lo}, {hi}]')")
        elif tp in _PRIMITIVE_NAMES:
            tname = _PRIMITIVE_NAMES[tp]
            checks.append(f"    if type({v}) is not {tname}:")
            checks.append(f"        raise _E('{where}: expected {tname}')")
        elif tp is float:
            checks.append(f"    if type({v}) is not float:")
            checks.append(f"        if type({v}) is not int:")
            checks.append(f"            raise _E('{where}: expected float')")
            checks.append(f"        {v} = float({v})")
            checks.append(f"    if not _fin({v}):")
            checks.append(f"        raise _E('{where}: not a finite number')")
        elif tp is Any:
            pass
        elif (prim := _prim_dict_args(tp)) is not None:
            # a map of primitives (gossip tags): checked inline, as dec_prim_dict does
            kn, vn = _PRIMITIVE_NAMES[prim[0]], _PRIMITIVE_NAMES[prim[1]]
            checks.append(f"    if type({v}) is not dict:")
            checks.append(f"        raise _E('{where}: expected map')")
            checks.append(f"    if {v}:  # (most are empty: no iterator made)")
            checks.append(f"        for _k, _x in {v}.items():")
            checks.append(f"            if type(_k) is not {kn} or type(_x) is not {vn}:")
            checks.append(f"                raise _E('{where}: expected map of {kn} to {vn}')")
        else:
            ns[f"_d{i}"] = _decoder_for(tp, where)
            checks.append(f"    {v} = _d{i}({v})")
    setters = _slot_setters(cls, fields)
    if setters is None:
        build = [f"    return _cls({', '.join(names)})"]
    else:
        build = ["    _o = _new(_cls)"]
        for i, setter in enumerate(setters):
            ns[f"_s{i}"] = setter
            build.append(f"    _s{i}(_o, {names[i]})")
        build.append("    return _o")
    ns["_fit"] = _fitter(cls, fields)
    unpack = [f"    {', '.join(names)}{',' if n == 1 else ''} = raw"] if n else []
    lines = [
        "def decode(raw):",
        f"    if type(raw) is not list or len(raw) != {n}:",
        "        raw = _fit(raw)",
        *unpack, *checks, *build,
    ]
    if tag is not None:  # raw is the whole message: [version, tag, fields...]
        lines += [
            "def decode_top(raw):",
            f"    if len(raw) != {n + 2}:",
            "        raw = [0, 0, *_fit(raw[2:])]",
            f"    _, _, {', '.join(names)} = raw" if n else "    pass",
            *checks, *build,
        ]
    dec_src = "\n".join(lines) + "\n"
    exec(compile(enc_src + dec_src, f"<wire codec for {cname}>", "exec"), ns)
    _ENCODERS[cls] = ns["encode"]
    _DECODERS[cls] = ns["decode"]
    _IMMUTABLE[cls] = immutable
    if tag is not None:
        _TOP_ENCODERS[cls] = ns["encode_top"]
        _TOP_DECODERS[tag] = ns["decode_top"]


def _fitter(cls: type, fields: Any) -> Callable[[Any], list[Any]]:
    """The slow path of a decoder whose input has another field count than the class
    (see the module docstring, compatibility): the fields of an array with extra
    trailing values (a newer sender's), or with missing trailing values that have
    defaults (an older sender's), the defaults filled in as the wire spells them;
    anything else raises :class:`WireError`."""
    n = len(fields)
    defaults: list[Any] = []  # wire values of the defaults of the trailing fields
    for f in reversed(fields):
        default = f.default
        if default is attrs.NOTHING or not f.init:
            break
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            if default.takes_self:
                break
            default = default.factory()
        conv = _encoder_for(f.type)
        defaults.append(default if conv is None else conv(default))
    defaults.reverse()
    need = n - len(defaults)
    expect = f"{n}" if need == n else f"{need} to {n}"
    where = cls.__name__

    def fit(raw: Any) -> list[Any]:
        if type(raw) is not list:
            raise WireError(f"{where}: expected {expect} fields")
        k = len(raw)
        if k > n:
            return raw[:n]
        if k < need:
            raise WireError(f"{where}: expected {expect} fields")
        # a fresh copy: a decoded dict field keeps the object it is given
        return raw + copy.deepcopy(defaults[k - need:])

    return fit


def _slot_setters(cls: type, fields: Any) -> list[Callable[[Any, Any], None]] | None:
    """The slots' setters, when building an instance by filling its slots is exactly
    what ``cls(*values)`` does; otherwise None (the decoder then calls the class)."""
    props = cls.__attrs_props__  # type: ignore[attr-defined]
    if not (props.is_slotted and props.is_frozen and props.added_init):
        return None
    if props.on_setattr_hook is not None or props.field_transformer is not None:
        return None
    if props.hashability not in (props.Hashability.HASHABLE, props.Hashability.UNHASHABLE,
                                 props.Hashability.LEAVE_ALONE):
        return None  # a cached hash lives in a slot the __init__ fills too
    if cls.__new__ is not object.__new__:  # type: ignore[comparison-overlap]
        return None
    for hook in ("__attrs_pre_init__", "__attrs_post_init__", "__attrs_init__"):
        if hasattr(cls, hook):
            return None
    setters = []
    for f in fields:
        if not f.init or f.validator is not None or f.converter is not None:
            return None
        slot = getattr(cls, f.name, None)
        if type(slot) is not types.MemberDescriptorType:
            return None
        setters.append(slot.__set__)
    if len(setters) != len(cls.__attrs_attrs__):  # type: ignore[attr-defined]
        return None
    return setters


def _immutable_type(tp: Any) -> bool:
    """A field type whose decoded values are deeply immutable."""
    if tp in (int, float, str, bytes, bool, type(None)):
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return all(_immutable_type(a) for a in args)
    if origin is tuple:
        return len(args) == 2 and args[1] is Ellipsis and _immutable_type(args[0])
    if isinstance(tp, type) and attrs.has(tp):
        _compile(tp)
        return _IMMUTABLE[tp]
    return False


def _prim_dict_args(tp: Any) -> tuple[type, type] | None:
    """``(key type, value type)`` of a ``dict`` of primitives (str, bytes, bool)."""
    if typing.get_origin(tp) is dict:
        kt, vt = typing.get_args(tp)
        if kt in (str, bytes, bool) and vt in (str, bytes, bool):
            return kt, vt
    return None


def _encoder_for(tp: Any) -> Callable[[Any], Any] | None:
    """A converter to msgpack-native values, or None when the value is already native."""
    if tp in (int, float, str, bytes, bool, type(None), Any):
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            inner_conv = _encoder_for(inner[0])
            if inner_conv is None:
                return None
            return lambda v: None if v is None else inner_conv(v)
        return None
    if origin is tuple:
        conv = _encoder_for(args[0]) if args else None
        if conv is None:
            return list
        return lambda v: [conv(x) for x in v]
    if origin is dict:
        kc = _encoder_for(args[0])
        vc = _encoder_for(args[1])
        if kc is None and vc is None:
            return None
        return lambda v: {(kc(k) if kc else k): (vc(x) if vc else x) for k, x in v.items()}
    if attrs.has(tp):
        _compile(tp)
        return _ENCODERS[tp]
    raise TypeError(f"unsupported wire field type {tp!r}")


def _decoder_for(tp: Any, where: str) -> Callable[[Any], Any]:
    """A validating converter from a msgpack value to ``tp``; raises WireError."""
    if tp is int:

        def dec_int(v: Any) -> int:
            if type(v) is not int:
                raise WireError(f"{where}: expected int")
            if not 0 <= v <= MAX_WIRE_INT:
                raise WireError(f"{where}: out of range")
            return v

        return dec_int
    if tp is float:

        def dec_float(v: Any) -> float:
            if type(v) is int:
                v = float(v)
            elif type(v) is not float:
                raise WireError(f"{where}: expected float")
            if not math.isfinite(v):
                raise WireError(f"{where}: not a finite number")
            return float(v)

        return dec_float
    if tp is bool:

        def dec_bool(v: Any) -> bool:
            if type(v) is not bool:
                raise WireError(f"{where}: expected bool")
            return v

        return dec_bool
    if tp is str:

        def dec_str(v: Any) -> str:
            if type(v) is not str:
                raise WireError(f"{where}: expected str")
            return v

        return dec_str
    if tp is bytes:

        def dec_bytes(v: Any) -> bytes:
            if type(v) is not bytes:
                raise WireError(f"{where}: expected bytes")
            return v

        return dec_bytes
    if tp is Any:
        return lambda v: v
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{where}: only Optional[X] unions are supported")
        conv = _decoder_for(inner[0], where)
        return lambda v: None if v is None else conv(v)
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: only tuple[X, ...] is supported")
        elem = args[0]
        if elem in _PRIMITIVE_NAMES:  # validate in one pass, no call per element
            expected = f"{where}[]: expected {_PRIMITIVE_NAMES[elem]}"
            ranged = elem is int  # (dec_int's range check too)

            def dec_prim_tuple(v: Any) -> tuple[Any, ...]:
                if type(v) is not list:
                    raise WireError(f"{where}: expected array")
                for x in v:
                    if type(x) is not elem:
                        raise WireError(expected)
                    if ranged and not 0 <= x <= MAX_WIRE_INT:
                        raise WireError(f"{where}[]: out of range")
                return tuple(v)

            return dec_prim_tuple
        conv = _decoder_for(elem, where + "[]")

        def dec_tuple(v: Any) -> tuple[Any, ...]:
            if type(v) is not list:
                raise WireError(f"{where}: expected array")
            return tuple(map(conv, v))

        return dec_tuple
    if origin is dict:
        kt, vt = args
        if kt in (str, bytes, bool) and vt in (str, bytes, bool):

            def dec_prim_dict(v: Any) -> dict[Any, Any]:
                if type(v) is not dict:
                    raise WireError(f"{where}: expected map")
                for k, x in v.items():
                    if type(k) is not kt or type(x) is not vt:
                        raise WireError(f"{where}: expected map of {kt.__name__} to {vt.__name__}")
                return v  # a fresh dict made by the unpacker: safe to keep

            return dec_prim_dict
        kconv = _decoder_for(kt, where + ".key")
        vconv = _decoder_for(vt, where + ".value")

        def dec_dict(v: Any) -> dict[Any, Any]:
            if type(v) is not dict:
                raise WireError(f"{where}: expected map")
            return {kconv(k): vconv(x) for k, x in v.items()}

        return dec_dict
    if attrs.has(tp):
        _compile(tp)
        # Validators of nested classes raise TypeError/ValueError; decode() turns
        # those into WireError at the top.
        return _DECODERS[tp]
    raise TypeError(f"unsupported wire field type {tp!r} at {where}")


# ---------------------------------------------------------------------------
# Public encode / decode.

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode(msg: Any) -> bytes:
    """Encode a registered message to bytes (deterministic for equal messages)."""
    try:
        top = _TOP_ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"{type(msg).__qualname__} is not a registered wire message") from None
    data: bytes = _pack(top(msg))
    return data


_pack = _packer.pack
_unpackb = msgpack.unpackb


def decode(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> Any:
    """Decode untrusted bytes into a registered message, or raise :class:`WireError`."""
    n = len(data)
    if n == 0:
        raise WireError("empty message")
    if n > max_size:
        raise WireError(f"message of {n} bytes exceeds the limit of {max_size}")
    try:
        raw = _unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types on malformed input
        raise WireError(f"malformed msgpack: {type(exc).__name__}") from None
    if type(raw) is not list or len(raw) < 2:
        raise WireError("not a clusterfunk message")
    version, tag = raw[0], raw[1]
    if version != WIRE_VERSION or type(version) is not int:
        raise WireError(f"unsupported wire version {version!r}")
    dec = _TOP_DECODERS.get(tag) if type(tag) is int else None
    if dec is None:
        raise WireError(f"unknown message tag {tag!r}")
    try:
        return dec(raw)
    except WireError:
        raise
    except (TypeError, ValueError) as exc:  # attrs validators on the message class
        raise WireError(f"{_BY_TAG[tag].__name__}: invalid field: {exc}") from None
