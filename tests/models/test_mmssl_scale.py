"""MMSSL never allocates a users x items (or items x items) tensor."""
import resource
import sys

import pytest
import torch

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models.base import Batch
from mmssl_pyg.models.mmssl import MMSSL


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024  # Linux reports KiB


@pytest.mark.slow
def test_trains_where_a_dense_user_item_matrix_cannot_fit():
    num_users, num_items, per_user = 1_700_000, 4_000, 3
    dense_bytes = num_users * num_items * 4
    assert dense_bytes > 24 * 2**30  # 27.2 GB: a dense float32 A would not fit in 24 GiB
    g = torch.Generator().manual_seed(0)
    users = torch.arange(num_users).repeat_interleave(per_user)
    items = torch.randint(0, num_items, (users.numel(),), generator=g)
    ei = torch.stack([users, items])
    feats = {'image': torch.rand(num_items, 4, generator=g),
             'text': torch.rand(num_items, 3, generator=g)}
    graph = RecGraph(num_users, num_items, ei, ei[:, :10], ei[:, :10], feats, 'synthetic')
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.001)
    opt_c = torch.optim.Adam(model.critic_parameters(), lr=3e-4, betas=(0.5, 0.9))
    opt_m = torch.optim.AdamW(model.model_parameters(), lr=5.5e-4, weight_decay=0.0)
    model.train()
    for _ in range(2):
        batch_users = torch.randint(0, num_users, (1024,), generator=g).unique()
        pos = items[batch_users * per_user]
        neg = torch.randint(0, num_items, (batch_users.numel(),), generator=g)
        batch = Batch(batch_users, pos, neg)
        c = model.critic_loss(batch)
        opt_c.zero_grad()
        c['loss'].backward()
        opt_c.step()
        out = model.loss(batch)
        opt_m.zero_grad()
        out['loss'].backward()
        opt_m.step()
        assert torch.isfinite(out['loss']) and torch.isfinite(c['loss'])
    assert model.update_modality_graphs() > 0
    model.eval()
    with torch.no_grad():
        user_emb, item_emb = model.get_embedding()
    assert user_emb.shape == (num_users, 8)
    peak = _peak_rss_bytes()  # about 3 GiB (the process's peak, so an upper bound)
    assert peak < 6 * 2**30, f'peak RSS {peak / 2**30:.2f} GiB'
