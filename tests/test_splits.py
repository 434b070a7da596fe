"""RNN gate matrices and attention q/k/v as extra rows; the compat WeightWatcher leaves them out like the reference.

The reference (weightwatcher 0.7.7) lists only ``attn.out_proj`` (id 4) and ``fc`` (id 5) for ``Net`` below:
observed with its ``describe()``; the extra rows are numbered after the last module so those ids hold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import htsr
from htsr.sources import open_source

torch = pytest.importorskip("torch")
nn = torch.nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(24, 32, num_layers=2, bidirectional=True)
        self.gru = nn.GRU(16, 20)
        self.attn = nn.MultiheadAttention(48, 4)
        self.fc = nn.Linear(48, 30)


def net():
    torch.manual_seed(0)
    return Net().eval()


def test_gates_and_qkv_are_slices_of_the_stacked_weights():
    model = net()
    rows = {t.longname: t for t in open_source(model).tensors}
    ih = model.lstm.weight_ih_l1_reverse.detach().numpy()
    for i, g in enumerate("ifgo"):
        t = rows[f"lstm.weight_ih_l1_reverse.{g}"]
        assert t.extra and t.shape == (32, 64)
        np.testing.assert_array_equal(t.load(), ih[32 * i:32 * (i + 1)])
    hh = model.gru.weight_hh_l0.detach().numpy()
    for i, g in enumerate("rzn"):
        np.testing.assert_array_equal(rows[f"gru.weight_hh_l0.{g}"].load(), hh[20 * i:20 * (i + 1)])
    qkv = model.attn.in_proj_weight.detach().numpy()
    for i, g in enumerate("qkv"):
        np.testing.assert_array_equal(rows[f"attn.in_proj.{g}"].load(), qkv[48 * i:48 * (i + 1)])
    ordinary = [t for t in rows.values() if not t.extra]
    assert [(t.layer_id, t.longname) for t in ordinary] == [(4, "attn.out_proj"), (5, "fc")]
    extra_ids = [t.layer_id for t in rows.values() if t.extra]
    assert extra_ids == list(range(6, 6 + 32 + 6 + 3))


def test_separate_projections_when_key_and_value_sizes_differ():
    torch.manual_seed(1)
    attn = nn.MultiheadAttention(32, 4, kdim=20, vdim=12)
    rows = {t.name: t for t in open_source(nn.Sequential(attn)).tensors if t.extra}
    assert {k: v.shape for k, v in rows.items()} == {"q_proj": (32, 32), "k_proj": (32, 20), "v_proj": (32, 12)}
    np.testing.assert_array_equal(rows["k_proj"].load(), attn.k_proj_weight.detach().numpy())


def test_compat_leaves_the_extra_rows_out_and_pickles_keep_them(tmp_path):
    model = net()
    details = htsr.analyze(model, seed=0).details
    assert len(details) == 2 + 32 + 6 + 3 and details["alpha"].notna().all()
    compat = htsr.WeightWatcher(model=model).analyze()
    assert list(compat["layer_id"]) == [4, 5] and list(compat["name"]) == ["out_proj", "fc"]
    assert list(htsr.WeightWatcher(model=model).describe()["layer_id"]) == [4, 5]
    torch.save(model, tmp_path / "net.pt")  # a file gives its state dict's rows: ids count the .weight keys
    from_file = htsr.analyze(tmp_path / "net.pt", seed=0).details
    pd.testing.assert_frame_equal(from_file, htsr.analyze(model.state_dict(), seed=0).details)
    by_name = details.set_index("longname").drop(columns=["layer_id", "name"])
    pd.testing.assert_frame_equal(from_file.set_index("longname").drop(columns=["layer_id", "name"]).loc[by_name.index],
                                  by_name)
    assert list(htsr.WeightWatcher(model=str(tmp_path / "net.pt")).describe()["layer_id"]) == [1, 2]


class Cells(nn.Module):
    def __init__(self):
        super().__init__()
        self.lcell = nn.LSTMCell(12, 16)
        self.gcell = nn.GRUCell(16, 14)
        self.rnn = nn.RNN(14, 18, num_layers=2, bidirectional=True)
        self.proj = nn.LSTM(10, 20, proj_size=6)


def test_state_dict_keys_give_the_modules_gate_rows(tmp_path):
    """RNN, RNN-cell and projected-LSTM weights read from keys (state dict, safetensors) equal the module's pieces."""
    torch.manual_seed(2)
    model = Cells().eval()
    live = {t.longname: t for t in open_source(model).tensors if t.extra}
    assert {"lcell.weight_ih.f", "gcell.weight_hh.n", "rnn.weight_hh_l1_reverse", "proj.weight_hr_l0",
            "proj.weight_hh_l0.o"} <= set(live)
    assert live["proj.weight_hh_l0.o"].shape == (20, 6)  # hidden 20 from weight_hr (6, 20), not from (80, 6)
    from safetensors.torch import save_file

    save_file(dict(model.state_dict()), str(tmp_path / "cells.safetensors"))
    for source in (model.state_dict(), tmp_path / "cells.safetensors"):
        rows = {t.longname: t for t in open_source(source).tensors if t.extra}
        assert set(rows) == set(live)
        for name, t in rows.items():
            assert t.shape == live[name].shape and t.key == live[name].key, name
            np.testing.assert_array_equal(t.load(), live[name].load())
    # compat: the reference's rows only (none of these)
    assert htsr.WeightWatcher(model=model.state_dict()).describe().empty
