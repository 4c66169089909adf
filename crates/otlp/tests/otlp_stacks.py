#!/usr/bin/env python3
"""Independent reader of an encoded ExportProfilesServiceRequest.

Uses the official `opentelemetry-proto` Python package (pip install
'opentelemetry-proto>=1.45'), not our Rust code, and prints every sample as
JSON: resource attributes, sample attributes, frames root -> leaf (function
name and profile.frame.type per line; `<type>+0x<address>` for a location
without lines), count and timestamps. The Rust test compares this with the
model it encoded. With `--to-json` it prints the request as protobuf JSON
instead (an independent JSON producer for our OTLP/JSON reader); with
`--check-json FILE` it parses our JSON with the official parser and prints
`equal` when it is the same message as the binary.
"""
import json
import sys

try:
    from opentelemetry.proto.collector.profiles.v1development import (
        profiles_service_pb2,
    )
except ImportError as e:  # pragma: no cover - reported by the Rust test
    sys.stderr.write(
        "MISSING: the official OpenTelemetry protobuf package is required: "
        "pip install 'opentelemetry-proto>=1.45' (%s)\n" % e
    )
    sys.exit(3)


def main(path):
    req = profiles_service_pb2.ExportProfilesServiceRequest()
    with open(path, "rb") as f:
        req.ParseFromString(f.read())
    d = req.dictionary
    strings = list(d.string_table)

    def any_value(v):
        kind = v.WhichOneof("value")
        if kind == "string_value":
            return v.string_value
        if kind == "string_value_strindex":
            return strings[v.string_value_strindex]
        if kind == "int_value":
            return v.int_value
        if kind is None:
            return None
        return str(getattr(v, kind))

    def kv_key(kv):
        return kv.key if kv.key else strings[kv.key_strindex]

    def attr(i):
        a = d.attribute_table[i]
        return strings[a.key_strindex], any_value(a.value)

    out = []
    for rp in req.resource_profiles:
        resource = {kv_key(kv): any_value(kv.value) for kv in rp.resource.attributes}
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                for s in p.samples:
                    frames = []
                    for li in d.stack_table[s.stack_index].location_indices:
                        loc = d.location_table[li]
                        ftype = dict(attr(a) for a in loc.attribute_indices)[
                            "profile.frame.type"
                        ]
                        if not loc.lines:
                            frames.append(["%s+0x%x" % (ftype, loc.address), ftype])
                        for line in loc.lines:
                            fn = d.function_table[line.function_index]
                            frames.append([strings[fn.name_strindex], ftype])
                    frames.reverse()  # stacks are leaf first
                    count = sum(s.values) if len(s.values) else len(s.timestamps_unix_nano)
                    out.append(
                        {
                            "resource": resource,
                            "attributes": dict(attr(a) for a in s.attribute_indices),
                            "frames": frames,
                            "count": count,
                            "timestamps": list(s.timestamps_unix_nano),
                        }
                    )
    json.dump(out, sys.stdout)


def to_json(path):
    """The request in the protobuf JSON mapping, as the official library
    writes it (lowerCamelCase, 64-bit integers as strings)."""
    from google.protobuf import json_format

    req = profiles_service_pb2.ExportProfilesServiceRequest()
    with open(path, "rb") as f:
        req.ParseFromString(f.read())
    sys.stdout.write(json_format.MessageToJson(req))


def check_json(path, json_path):
    """Parses our OTLP/JSON with the official protobuf JSON parser and says
    whether it is the same message as the binary file."""
    from google.protobuf import json_format

    binary = profiles_service_pb2.ExportProfilesServiceRequest()
    with open(path, "rb") as f:
        binary.ParseFromString(f.read())
    with open(json_path) as f:
        parsed = json_format.Parse(f.read(), profiles_service_pb2.ExportProfilesServiceRequest())
    sys.stdout.write("equal" if parsed == binary else "differ")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--to-json":
        to_json(sys.argv[1])
    elif len(sys.argv) > 3 and sys.argv[2] == "--check-json":
        check_json(sys.argv[1], sys.argv[3])
    else:
        main(sys.argv[1])
