//! One loaded model shared by many threads, as a server or a data loader would:
//! `cargo run --release --example shared_model -- path/to/checkpoint [threads]`.
//! Every thread's forwards give the single-thread answer bit for bit.

use std::sync::Arc;
use std::time::Instant;
use vitmsn::{ForwardInput, Tensor, ViTMSN};

fn main() -> vitmsn::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/base_all_outputs/model".into());
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(4);

    // `Arc` shares the model; its forwards take `&self`.
    let model = Arc::new(ViTMSN::builder().load(&dir)?);
    let config = model.config();
    let (height, width) = config.image_size.hw();
    let len = config.num_channels * height * width;
    let input = Arc::new(ForwardInput {
        pixel_values: Tensor::try_new(
            vec![1, config.num_channels, height, width],
            (0..len).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect(),
        )?,
        ..Default::default()
    });
    let reference = model.forward(&input)?;

    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (model, input) = (Arc::clone(&model), Arc::clone(&input));
            std::thread::spawn(move || -> vitmsn::Result<_> {
                (0..8)
                    .map(|_| model.forward(&input))
                    .collect::<Result<Vec<_>, _>>()
            })
        })
        .collect();
    let mut forwards = 0;
    for worker in workers {
        for out in worker.join().expect("a worker panicked")? {
            assert_eq!(out.last_hidden_state, reference.last_hidden_state);
            assert_eq!(out.logits, reference.logits);
            forwards += 1;
        }
    }
    println!(
        "{forwards} forwards on {threads} threads sharing one model in {:.2} s, all equal to the single-thread answer",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
