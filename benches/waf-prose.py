#!/usr/bin/env python3
"""Writes a benign corpus of ordinary English prose for replay.py.

Every paragraph of the license texts Debian ships in
/usr/share/common-licenses (GPL, Apache, Artistic, MPL, ...) becomes one
request, alternately as a search query (GET ?q=...) and as fields of a JSON
comment (POST). Legal prose is full of words like "select", "drop", "and",
"or", semicolons, quotes and parentheses: a false-positive check on text
nobody tuned the rules against.

    benches/waf-prose.py > /tmp/prose.jsonl
    benches/waf-corpus.sh --corpus /tmp/prose.jsonl
"""
import glob
import json
import re
import sys
import urllib.parse

paras = []
for f in sorted(glob.glob("/usr/share/common-licenses/*")):
    try:
        text = open(f, errors="ignore").read()
    except OSError:
        continue
    for p in re.split(r"\n\s*\n", text):
        p = " ".join(p.split())
        if 20 < len(p) < 400:
            paras.append(p)
paras = list(dict.fromkeys(paras))
if not paras:
    sys.exit("no license texts under /usr/share/common-licenses")
for i, p in enumerate(paras):
    common = {"id": f"prose-{i}", "family": "benign", "expect": "pass", "version": "HTTP/1.1"}
    if i % 2 == 0:
        r = dict(common, category="prose-query", method="GET",
                 uri="/search?q=" + urllib.parse.quote(p),
                 headers=[["Host", "localhost"], ["User-Agent", "Mozilla/5.0"]])
    else:
        r = dict(common, category="prose-json", method="POST", uri="/comments",
                 headers=[["Host", "localhost"], ["Content-Type", "application/json"]],
                 body=json.dumps({"text": p, "title": p[:40]}))
    print(json.dumps(r))
