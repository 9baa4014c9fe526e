//! CLIP ViT vision tower (transformers `CLIPVisionModel`), the image encoder of Wan2.1 I2V /
//! FLF2V: config, weight loading, a forward pass that can stop after any layer (Wan conditions
//! on the penultimate hidden state), transformers' `CLIPImageProcessor` preprocessing with a
//! bit-exact port of PIL's resize, and image file loading.

pub mod config;
pub mod image_io;
pub mod model;
pub mod preprocess;
pub mod resample;
pub mod weights;

pub use config::{ClipActivation, ClipVisionConfig};
pub use image_io::{image_size, load_image, RgbImage};
pub use model::{ClipVisionModel, ClipVisionOutput};
pub use preprocess::{
    rgb_planes, signed_pixels, wan_official_pixels, ClipImageProcessor, ResizeTo,
};
pub use resample::PilFilter;
pub use weights::{ClipKeyFormat, ClipWeights};
