#!/usr/bin/env python3
"""Import loops between the files of src/ (the layering rule of DESIGN.md §0).

Reads every `crate::`, `super::` and `self::` path (one level of `{...}` groups expanded),
maps it to the file that defines the module, and reports every pair of files that import each
other and every larger cycle. A module and its own parent or child (a `mod.rs` declaring and
re-exporting its children) are not counted as a loop. Exits 1 if there is any.

    python3 scripts/import-loops.py
"""
import os,re,sys,itertools
import os
root=os.path.join(os.path.dirname(os.path.abspath(__file__)),'..','src')
root=os.path.normpath(root)
files={}
for d,_,fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs') and '/bin/' not in d+'/':
            p=os.path.join(d,f)
            rel=p[len(root)+1:-3]
            parts=rel.split('/')
            if parts[-1] in ('mod','lib'): parts=parts[:-1]
            files['::'.join(parts)]=p
def resolve(modpath):
    # longest prefix that is a file module
    parts=modpath.split('::')
    for n in range(len(parts),-1,-1):
        k='::'.join(parts[:n])
        if k in files: return k
    return None
edges={}
for m,p in files.items():
    s=open(p).read()
    s=re.sub(r'//[^\n]*','',s)
    # expand one level of `prefix::{a, b::c, d}` into `prefix::a prefix::b::c prefix::d`
    def expand(mt):
        pre=mt.group(1); inner=mt.group(2)
        return ' '.join(pre+'::'+x.strip() for x in inner.split(',') if x.strip())
    for _ in range(2):
        s=re.sub(r'((?:crate|super)(?:::[a-z_][a-z0-9_]*)*)::\{([^{}]*)\}',expand,s)
    deps=set()
    for x in re.findall(r'crate((?:::[a-z_][a-z0-9_]*)+)',s):
        t=resolve(x[2:])
        if t is not None and t!=m and t!='': deps.add(t)
    # super:: relative
    base=m.split('::') if m else []
    is_dir = p.endswith('mod.rs') or p.endswith('lib.rs')
    parent = base if is_dir else base[:-1]
    for x in re.findall(r'\bsuper((?:::[a-z_][a-z0-9_]*)+)',s):
        t=resolve('::'.join(parent) + x) if not is_dir else resolve('::'.join(base[:-1])+x)
        if t is not None and t!=m and t!='': deps.add(t)
    for x in re.findall(r'\bself((?:::[a-z_][a-z0-9_]*)+)',s):
        t=resolve('::'.join(base)+x) if base else resolve(x[2:])
        if t is not None and t!=m and t!='': deps.add(t)
    anc=lambda a,b: b=='' or a.startswith(b+'::')
    edges[m]={d for d in deps if not anc(m,d) and not anc(d,m)}
# ignore edges to ancestors' mod (parent module re-export) only if declared? report cycles
loops=[]
for a in edges:
    for b in edges[a]:
        if a in edges.get(b,()) and a<b: loops.append((a,b))
for a,b in loops: print('loop:',files[a],'<->',files[b])
print(len(loops),'two-file loops')
# strongly connected components (Tarjan)
index={};low={};st=[];on=set();sccs=[];c=[0]
import sys
sys.setrecursionlimit(10000)
def sc(v):
    index[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in index: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],index[w])
    if low[v]==index[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v: break
        if len(comp)>1: sccs.append(comp)
for v in list(edges):
    if v not in index: sc(v)
for comp in sccs: print('cycle:',' '.join(sorted(files[x] for x in comp)))
print(len(sccs),'cycles')
sys.exit(1 if (loops or sccs) else 0)
