//! One forward through a `save_pretrained` checkpoint, with every output transformers
//! gives: `cargo run --release --example forward -- path/to/checkpoint`. Without an
//! argument it uses a tiny test checkpoint of this repository.

use vitmsn::{ForwardInput, Tensor, ViTMSN};

fn main() -> vitmsn::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/base_all_outputs/model".into());
    let model = ViTMSN::builder().load(&dir)?;
    let config = model.config();
    let (height, width) = config.image_size.hw();
    let channels = config.num_channels;

    // Pixels as transformers' ViTImageProcessor leaves them: normalised, [B, C, H, W].
    let values = (0..channels * height * width)
        .map(|i| ((i % 255) as f32 / 127.5) - 1.0)
        .collect();
    let pixel_values = Tensor::try_new(vec![1, channels, height, width], values)?;
    let out = model.forward(&ForwardInput {
        pixel_values,
        output_hidden_states: true,
        output_attentions: true,
        ..Default::default()
    })?;

    let kind = if model.is_classifier() {
        "ViTMSNForImageClassification"
    } else {
        "ViTMSNModel"
    };
    println!("{kind} on the {} backend", model.backend_name());
    if let Some(last) = &out.last_hidden_state {
        println!("last_hidden_state {:?}", last.shape);
    }
    if let Some(logits) = &out.logits {
        println!("logits {:?}", logits.shape);
    }
    println!(
        "{} hidden states of {:?}, {} attention maps of {:?}",
        out.hidden_states.len(),
        out.hidden_states[0].shape,
        out.attentions.len(),
        out.attentions[0].shape
    );
    Ok(())
}
