//! Micro-benchmarks of the per-byte code: line framing and the connection buffers.
//!
//! `cargo bench --bench framing`. The server-level comparison with a tokio peer lives with
//! the wharf-bench tool.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use wharf::proto::line::{LineCursor, LineEcho};
use wharf::Buffer;

fn line_framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("line_framing");
    let proto = LineEcho::default();
    for line_len in [16usize, 256, 4096] {
        // 64 KiB of lines, the most one read delivers, ending in a partial line.
        let mut input = Vec::new();
        while input.len() < 64 * 1024 {
            input.extend(std::iter::repeat_n(b'x', line_len - 1));
            input.push(b'\n');
        }
        input.truncate(64 * 1024);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(line_len), &input, |b, input| {
            b.iter(|| proto.on_input(&mut LineCursor::default(), black_box(input)))
        });
    }
    group.finish();
}

fn buffer_append_consume(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffer");
    let chunk = [0u8; 1500];
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    // A slow reader: the queue is drained a little less than it is filled, then emptied.
    group.bench_function("append_consume_1500", |b| {
        let mut buffer = Buffer::new();
        b.iter(|| {
            buffer.extend(black_box(&chunk));
            buffer.consume(black_box(1400));
            if buffer.len() > 64 * 1024 {
                buffer.clear();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, line_framing, buffer_append_consume);
criterion_main!(benches);
