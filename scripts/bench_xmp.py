"""Benchmark: `order --xmp` on N photos: the first write of N sidecars, a second run that finds every
value in place, and `restore` of them all; half of the photos are RAW+JPEG pairs, and a tenth have
a darktable sidecar already (edited in place, then put back byte for byte).

The files are small real files in a temporary folder on the disk given by --dir; the index rows and
scores are written straight into a fresh database (as scripts/bench_order.py does).

    python scripts/bench_xmp.py [-n 10000] [--style darktable] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_order import index_rows  # noqa: E402

from imgrank import sidecars  # noqa: E402
from imgrank.ranking import photo_files  # noqa: E402
from imgrank.store.db import open_db  # noqa: E402

DARKTABLE = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    b'xmlns:darktable="http://darktable.sf.net/" xmp:Rating="3" darktable:history_end="4">'
    + b"<darktable:history><rdf:Seq>"
    + b'<rdf:li darktable:operation="exposure" darktable:params="0000803f"/>' * 40
    + b"</rdf:Seq></darktable:history></rdf:Description></rdf:RDF></x:xmpmeta>\n"
)


def make_files(root: Path, n: int) -> list[str]:
    """n photos: JPEGs, every other one with its RAW beside it; a tenth with a darktable sidecar."""
    paths = []
    for i in range(n):
        folder = root / f"{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        jpg = folder / f"IMG_{i:06d}.JPG"
        jpg.write_bytes(b"jpeg")
        paths.append(str(jpg))
        if i % 2:
            (folder / f"IMG_{i:06d}.CR2").write_bytes(b"raw")
            paths.append(str(folder / f"IMG_{i:06d}.CR2"))
        if i % 10 == 0:
            Path(f"{jpg}.xmp").write_bytes(DARKTABLE)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--style", default="darktable", choices=sidecars.STYLES)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="Where to make the files.")
    args = parser.parse_args()
    random.seed(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        os.environ["IMGRANK_HOME"] = str(Path(tmp) / "home")
        root = Path(tmp) / "photos"
        paths = make_files(root, args.n)
        before = {p: p.read_bytes() for p in root.rglob("*.xmp")}
        db = open_db()
        index_rows(db, root, paths)
        out = {"photos": args.n, "files": len(paths), "style": args.style}
        start = time.perf_counter()
        photos = photo_files(db)
        first = sidecars.write_ratings(db, photos, args.style, top=args.n // 10)
        out["first_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        again = sidecars.write_ratings(db, photo_files(db), args.style, top=args.n // 10)
        out["again_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        back = sidecars.restore(db)
        out["restore_s"] = round(time.perf_counter() - start, 3)
        after = {p: p.read_bytes() for p in root.rglob("*.xmp")}
        out.update(
            written=first.written, created=first.created, unchanged=again.unchanged,
            restored=back.restored, removed=back.removed, every_sidecar_back=after == before,
        )  # fmt: skip
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"{args.n} photos ({len(paths)} files), --xmp-style {args.style}")
    print(f"first write: {out['first_s']:.2f} s ({first.written} sidecars, {first.created} created)")
    print(f"again, every value in place: {out['again_s']:.2f} s ({again.unchanged} unchanged)")
    print(f"restore: {out['restore_s']:.2f} s ({back.restored} put back, {back.removed} removed)")
    print(f"every sidecar back byte for byte: {out['every_sidecar_back']}")
    Path("bench-out").mkdir(exist_ok=True)
    Path("bench-out/bench_xmp.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
