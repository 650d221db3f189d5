import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f)); rows = [r for r in d['rows'] if r['seed'] == 0]
    n = len(rows); m = lambda k: sum(r[k] for r in rows) / n
    small = [r for r in rows if 'small circle' in r['prompt']]
    print(f"{f:40s} n={n} family={m('texture_match_guided'):.3f} spectrum={m('spectrum_guided'):.3f} colour={m('colour_distance_guided'):.1f} content={m('content_guided'):.3f} smallcircle={sum(r['content_guided'] for r in small)/max(1,len(small)):.2f}")
