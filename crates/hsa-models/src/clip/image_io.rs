//! Loading a conditioning image (PNG, JPEG or WebP) as 8-bit RGB, with typed errors and size
//! limits checked before the pixels are decoded.
//!
//! Like diffusers' `load_image` (`PIL.ImageOps.exif_transpose` + `convert("RGB")`), the EXIF
//! orientation is applied and alpha is dropped (the official Wan code's `convert("RGB")` does
//! the same; transformers 5's `CLIPImageProcessor`, handed an RGBA image itself, would composite
//! it onto white instead). The format is detected from the
//! file's content, not its extension. For 8-bit PNG / WebP (lossless) the pixels are the ones
//! PIL decodes; JPEG decoders may differ from PIL's libjpeg by a level here and there, and
//! 16-bit images are scaled to 8 bits (PIL clips or drops the low byte instead).

use std::path::Path;

pub use image::RgbImage;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use crate::{ModelError, Result};

/// Smallest accepted width and height: a 16 px side cannot carry a useful conditioning image
/// (and smaller files are usually icons or mistakes).
pub const MIN_IMAGE_SIDE: u32 = 16;
/// Largest accepted width or height.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest accepted pixel count (100 megapixels, ~300 MB as RGB8).
pub const MAX_IMAGE_PIXELS: u64 = 100_000_000;

/// Checks `width x height` against [`MIN_IMAGE_SIDE`], [`MAX_IMAGE_SIDE`] and
/// [`MAX_IMAGE_PIXELS`]; the error names the size.
pub fn check_image_size(path: &Path, width: u32, height: u32) -> Result<()> {
    let message = if width < MIN_IMAGE_SIDE || height < MIN_IMAGE_SIDE {
        format!("too small: both sides must be at least {MIN_IMAGE_SIDE} pixels")
    } else if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        format!("too large: both sides must be at most {MAX_IMAGE_SIDE} pixels")
    } else if width as u64 * height as u64 > MAX_IMAGE_PIXELS {
        format!(
            "too large: {:.1} megapixels, at most {} allowed",
            width as f64 * height as f64 / 1e6,
            MAX_IMAGE_PIXELS / 1_000_000
        )
    } else {
        return Ok(());
    };
    Err(ModelError::ImageSize {
        path: path.to_path_buf(),
        width,
        height,
        message,
    })
}

/// Reads an image file as 8-bit RGB.
///
/// Errors: [`ModelError::Io`] when the file cannot be opened or read (not found, a folder,
/// no permission); [`ModelError::ImageDecode`] when it is not a PNG / JPEG / WebP image or is
/// corrupt or truncated; [`ModelError::ImageSize`] when a side is below [`MIN_IMAGE_SIDE`] or above
/// [`MAX_IMAGE_SIDE`], or it has more than [`MAX_IMAGE_PIXELS`] (checked from the header,
/// before decoding).
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let (decoder, orientation) = open_checked(path)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(path, e))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Width and height of an image file as [`load_image`] would return it (EXIF orientation
/// applied), read from the header without decoding the pixels; the same errors.
pub fn image_size(path: impl AsRef<Path>) -> Result<(u32, u32)> {
    let path = path.as_ref();
    let (decoder, orientation) = open_checked(path)?;
    let (w, h) = decoder.dimensions();
    use image::metadata::Orientation::*;
    Ok(match orientation {
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => (h, w),
        _ => (w, h),
    })
}

fn decode_error(path: &Path, e: image::ImageError) -> ModelError {
    match e {
        image::ImageError::IoError(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            ModelError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
        other => ModelError::ImageDecode {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}

/// Opens the file's decoder (format from the content), checks the size limits from its header
/// and reads the EXIF orientation.
fn open_checked(path: &Path) -> Result<(impl ImageDecoder, image::metadata::Orientation)> {
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut reader = ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)?;
    // Only an allocation cap here: the size limits are checked below so the error can name the
    // size. 8 bytes per pixel covers 16-bit RGBA at the pixel limit.
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8 + (1 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(path, e))?;
    let (width, height) = decoder.dimensions();
    check_image_size(path, width, height)?;
    let orientation = decoder.orientation().map_err(|e| decode_error(path, e))?;
    Ok((decoder, orientation))
}
