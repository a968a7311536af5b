import torch
from torch import nn

from lth_tune.flatness import exact_hessian, exact_trace_and_top_eig, parameters_to_perturb
from lth_tune.flatness._util import flatten

from .nets import classification_data, pruned_mlp


def test_parameters_to_perturb_masks_and_order():
    m = pruned_mlp(bn=True)
    m[5].weight.requires_grad_(False)  # frozen: not perturbable
    space = parameters_to_perturb(m)
    expected = [n for n, p in m.named_parameters() if p.requires_grad]
    assert space.names == expected
    assert [id(p) for p in space.params] == [id(p) for p in m.parameters() if p.requires_grad]
    by_name = dict(zip(space.names, space.masks))
    assert torch.equal(by_name["0.weight_orig"], m[0].weight_mask)
    assert torch.equal(by_name["2.weight_orig"], m[2].weight_mask)
    assert torch.equal(by_name["0.bias"], torch.ones(12))
    assert "5.weight" not in by_name
    assert space.n_unpruned() == int(sum(mk.sum() for mk in space.masks))
    assert space.n_unpruned() < space.numel()


def test_exact_hessian_zero_in_pruned_rows_and_cols_and_equals_masked_dense():
    m = pruned_mlp()
    x, y = classification_data()
    ce = nn.CrossEntropyLoss()
    H = exact_hessian(m, ce, x, y)
    space = parameters_to_perturb(m)
    mask = flatten(space.masks).double()
    assert H.shape == (space.numel(), space.numel())
    assert torch.allclose(H, H.T, atol=1e-12)
    pruned = mask == 0
    assert pruned.sum() > 0
    assert H[pruned].abs().max() == 0 and H[:, pruned].abs().max() == 0
    # M H M == Hessian of the dense net evaluated at the effective weights, masked
    dense = nn.Sequential(*[type(mod)(*mod.weight.shape[::-1]) if isinstance(mod, nn.Linear) else mod
                            for mod in m])
    with torch.no_grad():
        for dm, pm in zip(dense, m):
            if isinstance(pm, nn.Linear):
                dm.weight.copy_(pm.weight_orig * pm.weight_mask if hasattr(pm, "weight_mask") else pm.weight)
                dm.bias.copy_(pm.bias)
    Hd = exact_hessian(dense, ce, x, y)
    # prune moves `weight` after `bias` (as `weight_orig`): permute the dense ordering to the pruned one
    dspace = parameters_to_perturb(dense)
    offsets, o = {}, 0
    for n, p in zip(dspace.names, dspace.params):
        offsets[n] = torch.arange(o, o + p.numel())
        o += p.numel()
    perm = torch.cat([offsets[n.replace("_orig", "")] for n in space.names])
    Hd = Hd[perm][:, perm]
    assert torch.allclose(H, mask[:, None] * Hd * mask[None, :], rtol=1e-10, atol=1e-12)
    assert m.training  # mode restored


def test_exact_trace_and_top_eig_consistent():
    m = pruned_mlp()
    x, y = classification_data()
    tr, evals, evecs = exact_trace_and_top_eig(m, nn.CrossEntropyLoss(), x, y, top_n=2)
    H = exact_hessian(m, nn.CrossEntropyLoss(), x, y)
    assert abs(tr - float(torch.trace(H))) < 1e-10
    assert evals[0] >= evals[1]
    v = flatten(evecs[0]).double()
    assert torch.allclose(H @ v, evals[0] * v, atol=1e-6)
