#!/usr/bin/env python3
"""Writes fuzz/corpus: answer streams for fuzz_response's run of calls (GetPage id 1,
TenantStatus id 2, a batch of GetPages ids 3-5, ServerStatus id 6), encoded by hand
from layergate.proto. Run from clients/c."""
import os, struct

def varint(n):
    out = b''
    while n >= 0x80:
        out += bytes([(n & 0x7f) | 0x80]); n >>= 7
    return out + bytes([n])

def field(num, wire, payload):
    if wire == 0:
        return varint(num << 3) + varint(payload)
    return varint(num << 3 | 2) + varint(len(payload)) + payload

def frame(b):
    return struct.pack('>I', len(b)) + b

page = field(1, 2, b'\x5a' * 8192) + field(2, 0, 10)
def get(i): return frame(field(1, 0, i) + field(10, 2, page))
layer = (field(1, 2, b'0000067f00000005000003e80000000000-0000067f00000005000003e800000000ff__000000000000000a-000000000000000b-g00000001')
         + field(2, 0, 0) + field(3, 0, 10) + field(4, 0, 11) + field(5, 0, 32768))
status = frame(field(1, 0, 2) + field(15, 2, field(1, 2, b'0123456789abcdef0123456789abcdef') + field(2, 2, b'active')
                                      + field(3, 0, 11) + field(4, 0, 11) + field(5, 0, 3) + field(6, 2, layer) + field(8, 2, b'no space')))
err = frame(field(1, 0, 3) + field(2, 2, field(1, 0, 4) + field(2, 2, b'tenant 0123: LSN 0/B is not available')))
server = frame(field(1, 0, 6) + field(17, 2, field(1, 0, 16384) + field(2, 0, 5) + field(3, 0, 1) + field(4, 0, 99)
                                      + field(5, 0, 2) + field(6, 2, b'0.2.0')))
conn_err = frame(field(1, 0, 0) + field(2, 2, field(1, 0, 12) + field(2, 2, b'the server holds its maximum of 1024 connections')))
seeds = {
    'all-answered': get(1) + status + get(3) + get(4) + get(5) + server,
    'errors': frame(field(1, 0, 1) + field(2, 2, field(1, 0, 3) + field(2, 2, b'no page'))) + status + err + get(4) + get(5) + server,
    'out-of-order': get(1) + status + get(5) + get(4) + get(3) + server,
    'connection-error': conn_err,
    'torn': get(1)[:100],
}
os.makedirs('fuzz/corpus', exist_ok=True)
for name, data in seeds.items():
    with open('fuzz/corpus/seed-' + name, 'wb') as f:
        f.write(data)
