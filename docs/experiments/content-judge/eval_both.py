"""`stylegen-trt eval` with every content judgement made twice: by the shipped judge (what the report shows) and by
a second judge (ROBUST, e.g. the package's any-outline judge), whose verdicts go to SIDE as JSON lines
{"prompt", "guided", "shipped", "robust", "moved"} ("moved": the second judge asked for the same shape at another
position, a check that it is not lenient). Record of an experiment. usage: ROBUST=W SIDE=OUT.jsonl python eval_both.py [eval args]"""
import json
import os
import sys
from pathlib import Path

from stylegen_trt import cli
from stylegen_trt.demo import classifier

shipped = classifier.content_judge()
robust = classifier.content_judge(classifier.load(Path(os.environ["ROBUST"])))
side = open(os.environ["SIDE"], "w", buffering=1)  # line-buffered: cli.main() ends in sys.exit


calls = [0]  # evaluate() judges each pair's guided images, then its branch-off images


def judge(images, prompts):
    a, b = shipped(images, prompts), robust(images, prompts)
    moved = robust(images, [p.replace("left", "X").replace("right", "left").replace("center", "right").replace("X", "center")
                            for p in prompts])
    calls[0] += 1
    for p, x, y, z in zip(prompts, a, b, moved):
        side.write(json.dumps({"prompt": p, "guided": calls[0] % 2 == 1, "shipped": x, "robust": y, "moved": z}) + "\n")
    return a


classifier.content_judge = lambda model=None: judge
sys.argv = ["stylegen-trt", "eval", *sys.argv[1:]]
cli.main()
