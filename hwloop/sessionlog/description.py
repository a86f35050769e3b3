"""The board description stored in a session file's ``/device`` group, and read back."""

from __future__ import annotations

import json

import h5py
import numpy as np

from hwloop.device import BoardDescription, Clamp, LayerBlock, NodeRole, SafetyLimits
from hwloop.sessionlog.schema import set_units

__all__ = [
    "description_from_group",
    "description_to_group",
]


def description_to_group(grp: h5py.Group, desc: BoardDescription) -> None:
    """Store the full board description in ``grp`` (see docs/session-format.md)."""
    grp.attrs["name"] = desc.name
    grp.attrs["backend"] = desc.backend
    grp.attrs["g_min_s"] = desc.g_min_s
    grp.attrs["g_max_s"] = desc.g_max_s
    grp.attrs["supports_complex_nudge"] = desc.supports_complex_nudge
    grp.attrs["v_read_range_v"] = desc.v_read_range_v
    grp.attrs["pulse_step_s"] = desc.pulse_step_s
    grp.attrs["g_scale_s"] = desc.g_scale_s
    grp.attrs["sample_dtype"] = desc.sample_dtype
    grp.attrs["deterministic"] = desc.deterministic
    grp.attrs["supports_resistive_nudge"] = desc.supports_resistive_nudge
    grp.attrs["limits_json"] = json.dumps(
        {k: getattr(desc.limits, k) for k in desc.limits.__dataclass_fields__}
    )
    grp.attrs["info_json"] = json.dumps(desc.info, default=str)
    grp.attrs["summary_json"] = json.dumps(desc.summary(), default=str)
    names = np.array([n.encode() for n in desc.node_names])
    set_units(grp.create_dataset("node_names", data=names), "text")
    roles = np.array([str(r).encode() for r in desc.node_roles])
    set_units(grp.create_dataset("node_roles", data=roles), "text (NodeRole)")
    clamps = np.array([str(c).encode() for c in desc.node_clamps])
    set_units(grp.create_dataset("node_clamps", data=clamps), "text (Clamp)")
    set_units(
        grp.create_dataset(
            "edge_nodes", data=np.asarray(desc.edge_nodes, dtype=np.int64), compression="gzip"
        ),
        "1 (node indices)",
    )
    set_units(
        grp.create_dataset("bias_nodes", data=np.asarray(desc.bias_nodes, dtype=np.int64)),
        "1 (node indices)",
    )
    if desc.layers is not None:
        lay = grp.create_group("layers")
        for i, blk in enumerate(desc.layers):
            g = lay.create_group(f"{i:03d}")
            set_units(g.create_dataset("src", data=np.asarray(blk.src, dtype=np.int64)), "1")
            set_units(g.create_dataset("dst", data=np.asarray(blk.dst, dtype=np.int64)), "1")
            g.attrs["edge_offset"] = blk.edge_offset


def description_from_group(grp: h5py.Group) -> BoardDescription:
    """Rebuild the board description stored by :func:`description_to_group`."""
    layers = None
    if "layers" in grp:
        layers = tuple(
            LayerBlock(
                src=np.asarray(g["src"][()], dtype=np.int64),
                dst=np.asarray(g["dst"][()], dtype=np.int64),
                edge_offset=int(g.attrs["edge_offset"]),
            )
            for _, g in sorted(grp["layers"].items())
        )
    limits = SafetyLimits(**json.loads(grp.attrs["limits_json"]))
    return BoardDescription(
        name=str(grp.attrs["name"]),
        backend=str(grp.attrs["backend"]),
        node_names=tuple(b.decode() for b in grp["node_names"][()]),
        node_roles=tuple(NodeRole(b.decode()) for b in grp["node_roles"][()]),
        node_clamps=tuple(Clamp(b.decode()) for b in grp["node_clamps"][()]),
        edge_nodes=np.asarray(grp["edge_nodes"][()], dtype=np.int64),
        g_min_s=float(grp.attrs["g_min_s"]),
        g_max_s=float(grp.attrs["g_max_s"]),
        limits=limits,
        supports_complex_nudge=bool(grp.attrs["supports_complex_nudge"]),
        layers=layers,
        bias_nodes=np.asarray(grp["bias_nodes"][()], dtype=np.int64),
        v_read_range_v=float(grp.attrs["v_read_range_v"]),
        pulse_step_s=float(grp.attrs["pulse_step_s"]),
        g_scale_s=float(grp.attrs["g_scale_s"]),
        # files written before these attributes existed get the description's defaults
        sample_dtype=str(grp.attrs.get("sample_dtype", "<f8")),
        deterministic=bool(grp.attrs.get("deterministic", False)),
        supports_resistive_nudge=bool(grp.attrs.get("supports_resistive_nudge", True)),
        info=json.loads(grp.attrs["info_json"]),
    )
