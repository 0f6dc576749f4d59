"""Opens a pinned version of an ecamp samples table with the `deltalake` package and checks
row count, sample ids and image bytes against what ecamp read (given as a JSON spec)."""
import hashlib
import json
import os
import sys

from deltalake import DeltaTable


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    table = DeltaTable(spec["table"], version=spec["version"])
    data = table.to_pyarrow_table(columns=["sample_id", "image"])
    ids = data.column("sample_id").to_pylist()
    images = data.column("image").to_pylist()
    got = sorted((i, hashlib.sha256(img["bytes"]).hexdigest()) for i, img in zip(ids, images))
    want = sorted(tuple(x) for x in spec["samples"])
    if len(got) != spec["rows"]:
        print(f"row count {len(got)} != {spec['rows']}")
        return 1
    if got != want:
        print("sample ids or image bytes differ")
        return 1
    print(f"interop ok: {len(got)} rows at version {spec['version']}")
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    sys.stdout.flush()
    # deltalake's native threads can abort during interpreter teardown; skip it.
    os._exit(code)
