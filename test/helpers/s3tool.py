#!/usr/bin/python3
"""s3tool: an independent S3 client for bucketfs' tests (boto3, never bucketfs code).

Tests use it to put objects into, and check objects in, the test S3 server
without going through the code under test. It is not a general CLI and not
part of bucketfs.

Input: one JSON object, as argv[1] or (when argv[1] is absent or "-") on stdin.
Output: one JSON object on stdout: {"ok": true, ...result} on success, or
{"ok": false, "error": {"code": ..., "message": ...}} with exit status 1.

Every command takes the connection fields
    endpoint, access_key, secret_key, region (default us-east-1)
and "op", one of:
    mkbucket    {bucket}                                   -> {created}
    put         {bucket, key, file | content_b64 | content_utf8,
                 metadata?, content_type?, multipart?, part_size?,
                 checksum? ("crc32" | "crc32c" | "crc64nvme"), checksum_type? ("COMPOSITE" | "FULL_OBJECT"),
                 part_sizes? (multipart: the size of each part, instead of part_size)}
                with checksum, each request carries that checksum (computed here, in
                Python, so botocore needs no awscrt) and S3 stores it with the object
                                                           -> {key, size, etag, sha256}
    put-many    {bucket, prefix?, count?, keys?, size | sizes, workers?}
                content is generated (see gen) from key and size
                                                           -> {objects: [{key, size, etag, sha256}]}
    upload-file {bucket, key, file, checksums? ("default" | "when_required")}
                boto3's client.upload_file as users call it: the client's and s3transfer's
                defaults (8 MiB multipart threshold and parts, whatever checksum this
                botocore adds by default); "when_required" is the client setting of
                botocore < 1.36 (and old aws-cli): no checksum
                                                           -> {key, size, etag, boto3, s3transfer}
    gen         {key, size, path}   write the generated content put-many
                uses for (key, size) to a local file       -> {size, sha256}
    get         {bucket, key, path?, range?, return_content?}
                                                           -> {size, sha256, etag, content_b64?}
    head        {bucket, key}   -> {exists, size, etag, last_modified_ms, metadata, content_type}
    checksums   {bucket, key, part_number?}  HEAD with ChecksumMode ENABLED
                -> {etag, size, parts_count, checksum_type, crc32?, crc32c?, crc64nvme?, sha1?, sha256?}
    crc         {algorithm, content_b64 | file} the checksum computed here -> {value (base64)}
    list        {bucket, prefix?, recursive? (default true), page_size?}
                all pages   -> {objects: [{key, size, etag, last_modified_ms}], prefixes, pages}
    delete-many {bucket, keys? | prefix?}                  -> {deleted}
"""

import base64
import hashlib
import json
import random
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore
import s3transfer
from botocore.config import Config
from botocore.exceptions import ClientError

CHUNK = 1024 * 1024


def make_client(cmd, pool=10):
    kwargs = dict(
        region_name=cmd.get("region", "us-east-1"),
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=max(10, pool),
        connect_timeout=10,
        read_timeout=120,
    )
    try:
        # botocore >= 1.36 adds CRC checksums to every request by default;
        # only send them where the API requires them.
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            **kwargs,
        )
    except TypeError:
        config = Config(**kwargs)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=cmd["endpoint"],
        aws_access_key_id=cmd["access_key"],
        aws_secret_access_key=cmd["secret_key"],
        config=config,
    )


def generated(key, size):
    """Deterministic pseudo-random content for (key, size)."""
    return random.Random("bucketfs:%s:%d" % (key, size)).randbytes(size)


def ms(dt):
    return int(dt.timestamp() * 1000)


def etag(raw):
    return raw.strip('"') if raw else raw


def body_of(cmd):
    if "file" in cmd:
        with open(cmd["file"], "rb") as f:
            return f.read()
    if "content_b64" in cmd:
        return base64.b64decode(cmd["content_b64"])
    if "content_utf8" in cmd:
        return cmd["content_utf8"].encode("utf-8")
    raise ValueError("put needs one of: file, content_b64, content_utf8")


def _table(poly, width):
    mask = (1 << width) - 1
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        t.append(c & mask)
    return t


# Reflected CRCs: CRC-32C (Castagnoli, poly 0x1EDC6F41 reflected) and CRC-64/NVME (0xAD93D23594C93659 reflected).
_CRC32C = _table(0x82F63B78, 32)
_CRC64NVME = _table(0x9A6C9329AC4BC9B5, 64)


def _crc_reflected(table, width, data):
    mask = (1 << width) - 1
    c = mask
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ mask


def crc_raw(alg, data):
    """The checksum S3 stores for `data`, as raw big-endian bytes."""
    if alg == "crc32":
        return (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")
    if alg == "crc32c":
        return _crc_reflected(_CRC32C, 32, data).to_bytes(4, "big")
    if alg == "crc64nvme":
        return _crc_reflected(_CRC64NVME, 64, data).to_bytes(8, "big")
    raise ValueError("unknown checksum algorithm %r" % alg)


def crc_b64(alg, data):
    return base64.b64encode(crc_raw(alg, data)).decode("ascii")


_ARG = {"crc32": "ChecksumCRC32", "crc32c": "ChecksumCRC32C", "crc64nvme": "ChecksumCRC64NVME"}

# The next request's extra headers: checksum headers as plain headers (signed like any other),
# since the botocore model installed here may not know CRC64NVME or x-amz-checksum-type.
_EXTRA = {}


def _add_extra(request, **kwargs):
    for k, v in _EXTRA.items():
        request.headers[k] = v


def call(client, op, headers, **kwargs):
    if not getattr(client, "_s3tool_hooked", False):
        client.meta.events.register("before-sign.s3", _add_extra)
        client._s3tool_hooked = True
    _EXTRA.clear()
    _EXTRA.update(headers)
    try:
        return getattr(client, op)(**kwargs)
    finally:
        _EXTRA.clear()


def put_bytes(client, bucket, key, data, metadata=None, content_type=None, multipart=False, part_size=None,
              checksum=None, checksum_type=None, part_sizes=None):
    extra = {}
    if metadata:
        extra["Metadata"] = {str(k): str(v) for k, v in metadata.items()}
    if content_type:
        extra["ContentType"] = content_type
    if multipart:
        part = int(part_size or 8 * CHUNK)
        if part < 5 * CHUNK and len(data) > part:
            raise ValueError("part_size must be >= 5 MiB")
        create_h = {}
        complete_h = {}
        if checksum:
            ctype = checksum_type or ("FULL_OBJECT" if checksum == "crc64nvme" else "COMPOSITE")
            create_h = {"x-amz-checksum-algorithm": checksum.upper(), "x-amz-checksum-type": ctype}
            complete_h = {"x-amz-checksum-type": ctype}
            if ctype == "FULL_OBJECT":
                complete_h["x-amz-checksum-" + checksum] = crc_b64(checksum, data)
        up = call(client, "create_multipart_upload", create_h, Bucket=bucket, Key=key, **extra)
        uid = up["UploadId"]
        try:
            parts = []
            sums = []
            if part_sizes:
                if sum(part_sizes) != len(data):
                    raise ValueError("part_sizes must add up to the object's size")
                bounds = [sum(part_sizes[:i]) for i in range(len(part_sizes) + 1)]
            else:
                bounds = list(range(0, max(len(data), 1), part)) + [len(data)]
            for n in range(1, len(bounds)):
                off, end = bounds[n - 1], bounds[n]
                body = data[off:end]
                ph = {"x-amz-checksum-" + checksum: crc_b64(checksum, body)} if checksum else {}
                r = call(client, "upload_part", ph, Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=body)
                parts.append({"PartNumber": n, "ETag": r["ETag"]})
                sums.append(ph.get("x-amz-checksum-" + checksum) if checksum else None)
            body_parts = parts
            if checksum and checksum in ("crc32", "crc32c"):
                # The model knows ChecksumCRC32/ChecksumCRC32C of a completed part.
                body_parts = [dict(p, **{_ARG[checksum]: v}) for p, v in zip(parts, sums)]
            elif checksum:
                body_parts = None
            if body_parts is not None:
                r = call(client, "complete_multipart_upload", complete_h,
                         Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": body_parts})
            else:
                # CRC64NVME parts: the model cannot carry them, so the XML is sent as is.
                xml = "<CompleteMultipartUpload>" + "".join(
                    "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag><ChecksumCRC64NVME>%s</ChecksumCRC64NVME></Part>"
                    % (p["PartNumber"], p["ETag"], v) for p, v in zip(parts, sums)) + "</CompleteMultipartUpload>"
                r = _complete_raw(client, bucket, key, uid, xml, complete_h)
        except Exception:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)
            raise
    else:
        h = {"x-amz-checksum-" + checksum: crc_b64(checksum, data)} if checksum else {}
        r = call(client, "put_object", h, Bucket=bucket, Key=key, Body=data, **extra)
    return {
        "key": key,
        "size": len(data),
        "etag": etag(r.get("ETag")),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _complete_raw(client, bucket, key, uid, xml, headers):
    """CompleteMultipartUpload with this XML body: boto3 sends it, the body swapped in before signing."""
    def swap(request, **kwargs):
        request.data = xml.encode("utf-8")
        for name in ("Content-Length", "Content-MD5"):
            if name in request.headers:
                del request.headers[name]
        request.headers["Content-Length"] = str(len(request.data))
    client.meta.events.register_first("before-sign.s3.CompleteMultipartUpload", swap)
    try:
        return call(client, "complete_multipart_upload", headers,
                    Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": []})
    finally:
        client.meta.events.unregister("before-sign.s3.CompleteMultipartUpload", swap)


def op_mkbucket(cmd):
    client = make_client(cmd)
    try:
        client.create_bucket(Bucket=cmd["bucket"])
        return {"created": True}
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return {"created": False}
        raise


def op_put(cmd):
    client = make_client(cmd)
    return put_bytes(
        client,
        cmd["bucket"],
        cmd["key"],
        body_of(cmd),
        metadata=cmd.get("metadata"),
        content_type=cmd.get("content_type"),
        multipart=bool(cmd.get("multipart")),
        part_size=cmd.get("part_size"),
        checksum=cmd.get("checksum"),
        checksum_type=cmd.get("checksum_type"),
        part_sizes=cmd.get("part_sizes"),
    )


def op_put_many(cmd):
    if "keys" in cmd:
        keys = list(cmd["keys"])
    else:
        count = int(cmd["count"])
        width = max(len(str(count - 1)), 1)
        keys = ["%s%0*d" % (cmd.get("prefix", ""), width, i) for i in range(count)]
    if "sizes" in cmd:
        sizes = [int(s) for s in cmd["sizes"]]
        if len(sizes) != len(keys):
            raise ValueError("sizes must have one entry per key")
    else:
        sizes = [int(cmd.get("size", 0))] * len(keys)
    workers = int(cmd.get("workers", 16))
    client = make_client(cmd, pool=workers)
    bucket = cmd["bucket"]

    def one(i):
        return put_bytes(client, bucket, keys[i], generated(keys[i], sizes[i]))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        objects = list(pool.map(one, range(len(keys))))
    return {"objects": objects}


def op_upload_file(cmd):
    mode = cmd.get("checksums", "default")
    if mode not in ("default", "when_required"):
        raise ValueError("checksums must be default or when_required, not %r" % mode)
    # Only what reaching the test server needs (path style for a loopback IP); no other setting.
    kwargs = dict(region_name=cmd.get("region", "us-east-1"), s3={"addressing_style": "path"})
    config = Config(**kwargs)
    if mode == "when_required":
        try:
            config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required", **kwargs)
        except TypeError:
            pass  # botocore < 1.36 knows no such setting: it sends checksums only where required anyway
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=cmd["endpoint"],
        aws_access_key_id=cmd["access_key"],
        aws_secret_access_key=cmd["secret_key"],
        config=config,
    )
    client.upload_file(cmd["file"], cmd["bucket"], cmd["key"])
    r = client.head_object(Bucket=cmd["bucket"], Key=cmd["key"])
    return {"key": cmd["key"], "size": r["ContentLength"], "etag": etag(r.get("ETag")),
            "boto3": boto3.__version__, "s3transfer": s3transfer.__version__}


def op_gen(cmd):
    data = generated(cmd["key"], int(cmd["size"]))
    with open(cmd["path"], "wb") as f:
        f.write(data)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def op_get(cmd):
    client = make_client(cmd)
    extra = {}
    if cmd.get("range"):
        extra["Range"] = cmd["range"]
    r = client.get_object(Bucket=cmd["bucket"], Key=cmd["key"], **extra)
    h = hashlib.sha256()
    size = 0
    keep = bool(cmd.get("return_content"))
    kept = []
    out = open(cmd["path"], "wb") if cmd.get("path") else None
    try:
        for chunk in r["Body"].iter_chunks(CHUNK):
            h.update(chunk)
            size += len(chunk)
            if out:
                out.write(chunk)
            if keep:
                kept.append(chunk)
    finally:
        if out:
            out.close()
    res = {"size": size, "sha256": h.hexdigest(), "etag": etag(r.get("ETag"))}
    if keep:
        res["content_b64"] = base64.b64encode(b"".join(kept)).decode("ascii")
    return res


def op_head(cmd):
    client = make_client(cmd)
    try:
        r = client.head_object(Bucket=cmd["bucket"], Key=cmd["key"])
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return {"exists": False}
        raise
    return {
        "exists": True,
        "size": r["ContentLength"],
        "etag": etag(r.get("ETag")),
        "last_modified_ms": ms(r["LastModified"]),
        "metadata": r.get("Metadata", {}),
        "content_type": r.get("ContentType"),
    }


def op_checksums(cmd):
    client = make_client(cmd)
    extra = {"PartNumber": int(cmd["part_number"])} if cmd.get("part_number") else {}
    r = client.head_object(Bucket=cmd["bucket"], Key=cmd["key"], ChecksumMode="ENABLED", **extra)
    # From the raw headers: the botocore model installed here may not know CRC64NVME or the type.
    h = r["ResponseMetadata"]["HTTPHeaders"]
    out = {
        "etag": etag(r.get("ETag")),
        "size": r["ContentLength"],
        "parts_count": int(h["x-amz-mp-parts-count"]) if "x-amz-mp-parts-count" in h else None,
        "checksum_type": h.get("x-amz-checksum-type"),
    }
    for alg in ("crc32", "crc32c", "crc64nvme", "sha1", "sha256"):
        v = h.get("x-amz-checksum-" + alg)
        if v:
            out[alg] = v
    return out


def op_crc(cmd):
    return {"value": crc_b64(cmd["algorithm"], body_of(cmd))}


def op_list(cmd):
    client = make_client(cmd)
    kwargs = {"Bucket": cmd["bucket"], "Prefix": cmd.get("prefix", "")}
    if not cmd.get("recursive", True):
        kwargs["Delimiter"] = "/"
    objects, prefixes = [], []
    if cmd.get("page_size"):
        kwargs["PaginationConfig"] = {"PageSize": int(cmd["page_size"])}
    pages = 0
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        pages += 1
        for o in page.get("Contents", []):
            objects.append(
                {"key": o["Key"], "size": o["Size"], "etag": etag(o.get("ETag")), "last_modified_ms": ms(o["LastModified"])}
            )
        for p in page.get("CommonPrefixes", []):
            prefixes.append(p["Prefix"])
    return {"objects": objects, "prefixes": prefixes, "pages": pages}


def op_delete_many(cmd):
    client = make_client(cmd)
    bucket = cmd["bucket"]
    if "keys" in cmd:
        keys = list(cmd["keys"])
    elif "prefix" in cmd:
        keys = [o["key"] for o in op_list({**cmd, "recursive": True})["objects"]]
    else:
        raise ValueError("delete-many needs keys or prefix")
    deleted = 0
    for i in range(0, len(keys), 1000):
        batch = keys[i:i + 1000]
        r = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": False})
        errors = r.get("Errors", [])
        if errors:
            raise RuntimeError("delete-many: %d errors, first: %s" % (len(errors), json.dumps(errors[0])))
        deleted += len(r.get("Deleted", []))
    return {"deleted": deleted}


def op_uploads(cmd):
    client = make_client(cmd)
    r = client.list_multipart_uploads(Bucket=cmd["bucket"], Prefix=cmd.get("prefix", ""))
    return {"uploads": [{"key": u["Key"], "upload_id": u["UploadId"]} for u in r.get("Uploads", [])]}


OPS = {
    "uploads": op_uploads,
    "mkbucket": op_mkbucket,
    "put": op_put,
    "put-many": op_put_many,
    "upload-file": op_upload_file,
    "gen": op_gen,
    "get": op_get,
    "head": op_head,
    "checksums": op_checksums,
    "crc": op_crc,
    "list": op_list,
    "delete-many": op_delete_many,
}


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "-" else sys.stdin.read()
    try:
        cmd = json.loads(raw)
        fn = OPS.get(cmd.get("op"))
        if fn is None:
            raise ValueError("unknown op %r (known: %s)" % (cmd.get("op"), ", ".join(sorted(OPS))))
        result = fn(cmd)
    except ClientError as e:
        err = e.response.get("Error", {})
        json.dump({"ok": False, "error": {"code": err.get("Code", "ClientError"), "message": str(e)}}, sys.stdout)
        sys.stdout.write("\n")
        return 1
    except Exception as e:  # noqa: BLE001 - report everything as JSON
        json.dump({"ok": False, "error": {"code": type(e).__name__, "message": str(e)}}, sys.stdout)
        sys.stdout.write("\n")
        return 1
    json.dump(dict(ok=True, botocore=botocore.__version__, **result), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
