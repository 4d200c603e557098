"""Max relative differences and epoch-second medians of the runs in notes/grcn-study-evidence/.

    python notes/grcn_compare.py old1 new1 old2 new2 old3 new3
(runs named old* are 39284e1, new* grcn-study; the first old and first new are the references)
"""
import json
import statistics as st
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / 'grcn-study-evidence'
H = {r: json.loads((HERE / f'{r}.json').read_text()) for r in sys.argv[1:]}
KEYS = ['train/loss', 'val/recall@20', 'val/ndcg@20']


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b)) if a != b else 0.0


old = [r for r in H if r.startswith('old')]
new = [r for r in H if r.startswith('new')]
pairs = [(old[0], x) for x in old[1:] + new] + [(new[0], x) for x in new[1:]]
for a, b in pairs:
    rows = list(zip(H[a]['history'], H[b]['history']))
    print(a, 'vs', b, {k: f'{max(rel(x[k], y[k]) for x, y in rows):.2e}' for k in KEYS})
med = {}
for r, h in H.items():
    secs = [e['epoch_seconds'] for e in h['history']]
    med[r] = st.median(secs[1:6])
    print(r, h['module'], 'epoch_seconds', [round(s, 2) for s in secs], 'median 2..6',
          round(med[r], 2))
if old and new:
    pair_ratios = [med[n] / med[o] for o, n in zip(old, new)]
    print('new/old per pair', [round(x, 3) for x in pair_ratios],
          'mean-of-medians ratio',
          round(st.mean(med[n] for n in new) / st.mean(med[o] for o in old), 3))
