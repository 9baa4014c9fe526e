//! Video file output: MP4 (H.264, yuv420p), animated GIF, or a folder of PNG frames.
//!
//! * **MP4** — encoded with OpenH264 (the `openh264` crate compiles the codec from source, no
//!   system library needed) and muxed with the pure-Rust `muxide`. Constant-QP-ish quality
//!   settings (QP held in [`MP4_QP_MIN`]..=[`MP4_QP_MAX`]), BT.601 limited-range colour,
//!   tagged as such in the stream, Constrained Baseline profile (plays everywhere). H.264 4:2:0
//!   needs even sizes and OpenH264 needs at least 16×16, so odd or tiny frames are **padded**
//!   (edge pixels replicated) to the next valid size: the MP4 is then slightly larger than the
//!   clip (no display cropping is recorded: OpenH264 crops only to even sizes and `muxide` writes
//!   one size for the track and the sample entry). For tiny clips (our bundled model makes 32×32)
//!   call [`VideoFrames::upscale_nearest`] first so the MP4 is watchable; that is the caller's
//!   choice (e.g. a `--scale` flag). A one-frame MP4 plays for a single 1/90000 s tick (`muxide`
//!   times the last frame by the previous frame's duration); write stills as PNG.
//! * **GIF** — one palette per frame (NeuQuant), loops forever, frame delays in centiseconds
//!   rounded so the average rate matches `fps` (GIF cannot go faster than 50 fps here: every
//!   delay is at least 2 cs, since browsers slow down shorter ones).
//! * **PNG frames** — a folder `frame_0000.png`, `frame_0001.png`, … (lossless).
//!
//! Every format is written atomically: a file goes through [`crate::io::write_atomic`]; a PNG
//! folder is filled under a temp name beside the target and renamed into place.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::io::write_atomic;
use crate::{PipelineError, Result};

/// Smallest side OpenH264 accepts; smaller frames are padded up to it.
pub const H264_MIN_SIDE: usize = 16;
/// Largest frame OpenH264 encodes (either orientation).
pub const H264_MAX_SIZE: (usize, usize) = (3840, 2160);
/// Quantiser range for MP4 output (the rate controller picks within it). Near visually
/// lossless: the round-trip test measures 42.7–48.9 dB luma PSNR through ffmpeg's decoder, and
/// 81 frames of 832×480 come to ≈0.2 MB on smooth synthetic content.
pub const MP4_QP_MIN: u8 = 12;
/// See [`MP4_QP_MIN`].
pub const MP4_QP_MAX: u8 = 20;
/// NeuQuant sampling factor for GIF palettes (1 = best, 30 = fastest; 10 is the crate's
/// suggested compromise). At 3 the 64×48 test clip's mean error is ≈5.5 levels against ≈7.7 at
/// 10; 81 frames of 832×480 take ≈11 s on 2 cores (frames are quantised in parallel).
const GIF_SPEED: i32 = 3;

/// RGB frames, 8-bit, row-major HWC, all the same size.
#[derive(Clone, PartialEq)]
pub struct VideoFrames {
    pub width: usize,
    pub height: usize,
    /// Frames per second (the model's rate).
    pub fps: f64,
    /// Each frame is `height * width * 3` bytes, RGB, row-major.
    pub frames: Vec<Vec<u8>>,
}

impl std::fmt::Debug for VideoFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFrames")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("fps", &self.fps)
            .field("frames", &self.frames.len())
            .finish()
    }
}

impl VideoFrames {
    /// From a tensor-like buffer `[3, F, H, W]` of f32 in `[-1, 1]` (values are clamped, mapped
    /// to 0..=255 with rounding). NaN is an error (it means the decode went wrong; writing it as
    /// black would hide that).
    pub fn from_cfhw(
        data: &[f32],
        frames: usize,
        height: usize,
        width: usize,
        fps: f64,
    ) -> Result<Self> {
        let plane = height
            .checked_mul(width)
            .ok_or_else(|| invalid("video size overflows"))?;
        let expected = plane
            .checked_mul(frames)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| invalid("video size overflows"))?;
        if data.len() != expected {
            return Err(invalid(format!(
                "video buffer has {} values, expected 3×{frames}×{height}×{width} = {expected}",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| v.is_nan()) {
            let (c, rest) = (i / (frames * plane), i % (frames * plane));
            return Err(invalid(format!(
                "video contains NaN (first at channel {c}, frame {}, pixel {})",
                rest / plane,
                rest % plane
            )));
        }
        let to_u8 = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
        let out: Vec<Vec<u8>> = (0..frames)
            .map(|f| {
                let mut rgb = vec![0u8; plane * 3];
                for c in 0..3 {
                    let src = &data[(c * frames + f) * plane..][..plane];
                    for (p, &v) in src.iter().enumerate() {
                        rgb[p * 3 + c] = to_u8(v);
                    }
                }
                rgb
            })
            .collect();
        let v = Self {
            width,
            height,
            fps,
            frames: out,
        };
        v.validate()?;
        Ok(v)
    }

    /// Checks sizes, frame count and frame rate.
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(invalid(format!(
                "video size {}×{} is empty",
                self.width, self.height
            )));
        }
        if self.frames.is_empty() {
            return Err(invalid("video has no frames"));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(invalid(format!(
                "frame rate must be positive, got {}",
                self.fps
            )));
        }
        let expected = self
            .width
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| invalid("video size overflows"))?;
        for (i, f) in self.frames.iter().enumerate() {
            if f.len() != expected {
                return Err(invalid(format!(
                    "frame {i} has {} bytes, expected {}×{}×3 = {expected}",
                    f.len(),
                    self.width,
                    self.height
                )));
            }
        }
        Ok(())
    }

    /// Enlarges every frame by an integer factor `k` (each pixel becomes a k×k block), e.g. to
    /// make a 32×32 clip watchable as an MP4. `k = 1` returns a copy.
    pub fn upscale_nearest(&self, k: usize) -> Result<Self> {
        self.validate()?;
        if k == 0 {
            return Err(invalid("upscale factor must be at least 1"));
        }
        let (w, h) = (
            self.width
                .checked_mul(k)
                .ok_or_else(|| invalid("upscaled size overflows"))?,
            self.height
                .checked_mul(k)
                .ok_or_else(|| invalid("upscaled size overflows"))?,
        );
        let frames = self
            .frames
            .iter()
            .map(|src| {
                let mut dst = Vec::with_capacity(w * h * 3);
                for y in 0..self.height {
                    let row_start = dst.len();
                    for x in 0..self.width {
                        let px = &src[(y * self.width + x) * 3..][..3];
                        for _ in 0..k {
                            dst.extend_from_slice(px);
                        }
                    }
                    for _ in 1..k {
                        dst.extend_from_within(row_start..row_start + w * 3);
                    }
                }
                dst
            })
            .collect();
        Ok(Self {
            width: w,
            height: h,
            fps: self.fps,
            frames,
        })
    }

    /// The size the MP4 will have: even, and at least [`H264_MIN_SIDE`] on each side.
    pub fn mp4_coded_size(&self) -> (usize, usize) {
        (coded_side(self.width), coded_side(self.height))
    }
}

fn coded_side(n: usize) -> usize {
    (n + (n & 1)).max(H264_MIN_SIDE)
}

/// Output container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    /// H.264 (yuv420p) in MP4.
    Mp4,
    /// Animated GIF, looping forever.
    Gif,
    /// A folder of `frame_0000.png`, `frame_0001.png`, ….
    PngFrames,
}

impl VideoFormat {
    /// `.mp4` → MP4, `.gif` → GIF (case-insensitive); an existing folder or a path without an
    /// extension → PNG frames in that folder. Anything else is an error naming the choices.
    pub fn from_path(p: &Path) -> Result<Self> {
        if p.is_dir() {
            return Ok(Self::PngFrames);
        }
        match p
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
        {
            None => Ok(Self::PngFrames),
            Some(e) if e == "mp4" => Ok(Self::Mp4),
            Some(e) if e == "gif" => Ok(Self::Gif),
            Some(e) => Err(PipelineError::Input {
                path: p.to_path_buf(),
                message: format!(
                    "unsupported video extension '.{e}': use .mp4, .gif, or a folder name \
                     (no extension) for PNG frames"
                ),
            }),
        }
    }
}

/// Writes `frames` to `path` in `format`, atomically (nothing is left behind on failure, and an
/// existing file is only replaced once the new one is complete).
pub fn write_video(frames: &VideoFrames, path: &Path, format: VideoFormat) -> Result<()> {
    frames.validate()?;
    match format {
        VideoFormat::Mp4 => write_mp4(frames, path),
        VideoFormat::Gif => write_gif(frames, path),
        VideoFormat::PngFrames => write_png_frames(frames, path),
    }
}

fn invalid(msg: impl Into<String>) -> PipelineError {
    PipelineError::Invalid(msg.into())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_file(path: &Path) -> Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path).map_err(io_err(path))?))
}

fn finish_file(mut w: BufWriter<File>, path: &Path) -> Result<()> {
    w.flush().map_err(io_err(path))?;
    let file = w.into_inner().map_err(|e| io_err(path)(e.into_error()))?;
    file.sync_all().map_err(io_err(path))
}

// ---------------------------------------------------------------------------------------------
// MP4

/// Copies an RGB frame into a larger buffer, replicating the last column/row into the padding.
fn pad_rgb(src: &[u8], w: usize, h: usize, cw: usize, ch: usize) -> Vec<u8> {
    if (w, h) == (cw, ch) {
        return src.to_vec();
    }
    let mut dst = Vec::with_capacity(cw * ch * 3);
    for y in 0..ch {
        let row = &src[y.min(h - 1) * w * 3..][..w * 3];
        dst.extend_from_slice(row);
        let last = &row[(w - 1) * 3..];
        for _ in w..cw {
            dst.extend_from_slice(last);
        }
    }
    dst
}

/// RGB → I420, BT.601 limited range ("studio swing", what decoders assume for untagged SD
/// video and what we tag the stream as). Chroma is the mean of each 2×2 block (centre sited).
/// Rounds to nearest, unlike OpenH264's converter which truncates (a −0.5 LSB bias).
fn rgb_to_i420(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    debug_assert!(w.is_multiple_of(2) && h.is_multiple_of(2));
    let (cw, ch) = (w / 2, h / 2);
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    let (y_plane, uv) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = uv.split_at_mut(cw * ch);
    let px = |x: usize, y: usize| {
        let p = &rgb[(y * w + x) * 3..][..3];
        (p[0] as f32, p[1] as f32, p[2] as f32)
    };
    let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = px(x, y);
            y_plane[y * w + x] = q(16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0);
        }
    }
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut r, mut g, mut b) = (0.0, 0.0, 0.0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = px(2 * cx + dx, 2 * cy + dy);
                r += p.0;
                g += p.1;
                b += p.2;
            }
            let (r, g, b) = (r / 4.0, g / 4.0, b / 4.0);
            u_plane[cy * cw + cx] = q(128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0);
            v_plane[cy * cw + cx] = q(128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0);
        }
    }
    out
}

fn encoder_config(fps: f64, cw: usize, ch: usize) -> openh264::encoder::EncoderConfig {
    use openh264::encoder::{
        BitRate, Complexity, EncoderConfig, FrameRate, IntraFramePeriod, QpRange, RateControlMode,
        UsageType, VuiConfig,
    };
    // A budget of ~2 bits per pixel per frame, far above what QP 12–20 needs, so the rate
    // controller never pushes the quantiser up to save bits; the QP range does the limiting.
    let bps = (2.0 * (cw * ch) as f64 * fps).clamp(1e6, 2e9) as u32;
    // A keyframe about every 2 s so players can seek.
    let gop = (fps * 2.0).round().clamp(1.0, 1000.0) as u32;
    EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Quality)
        .bitrate(BitRate::from_bps(bps))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .qp(QpRange::new(MP4_QP_MIN, MP4_QP_MAX))
        // Every frame must come out: a skipped frame would change the frame count.
        .skip_frames(false)
        .complexity(Complexity::High)
        .adaptive_quantization(false)
        .background_detection(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(gop))
        .num_threads(1)
        .vui(VuiConfig::bt601())
}

fn write_mp4(v: &VideoFrames, path: &Path) -> Result<()> {
    let (cw, ch) = v.mp4_coded_size();
    let (max_long, max_short) = H264_MAX_SIZE;
    if cw.max(ch) > max_long || cw.min(ch) > max_short {
        return Err(invalid(format!(
            "{}×{} is too large for H.264 output (at most {max_long}×{max_short}); \
             write PNG frames instead",
            v.width, v.height
        )));
    }
    let h264 = |e: openh264::Error| invalid(format!("H.264 encoder: {e}"));
    let mut encoder = openh264::encoder::Encoder::with_api_config(
        openh264::OpenH264API::from_source(),
        encoder_config(v.fps, cw, ch),
    )
    .map_err(h264)?;
    // OpenH264 logs warnings to stderr while it initialises (e.g. that the bit rate cannot be
    // enforced with frame skipping off, which is what we want); keep only errors. The level
    // can be set before initialisation; the crate sets it to quiet after.
    let mut level: std::os::raw::c_int = openh264_sys2::WELS_LOG_ERROR;
    // SAFETY: TRACE_LEVEL reads one 32-bit int through the pointer, which outlives the call.
    unsafe {
        encoder.raw_api().set_option(
            openh264_sys2::ENCODER_OPTION_TRACE_LEVEL,
            (&raw mut level).cast(),
        );
    }

    write_atomic(path, |tmp| {
        let mux_err = |e: muxide::api::MuxerError| match e {
            muxide::api::MuxerError::Io(source) => PipelineError::Io {
                path: tmp.to_path_buf(),
                source,
            },
            e => invalid(format!("MP4 muxer: {e}")),
        };
        let writer = create_file(tmp)?;
        let mut muxer = muxide::api::MuxerBuilder::new(writer)
            .video(muxide::api::VideoCodec::H264, cw as u32, ch as u32, v.fps)
            .with_fast_start(true)
            .build()
            .map_err(mux_err)?;
        let mut bitstream = Vec::new();
        for (i, frame) in v.frames.iter().enumerate() {
            let rgb = pad_rgb(frame, v.width, v.height, cw, ch);
            let yuv = openh264::formats::YUVBuffer::from_vec(rgb_to_i420(&rgb, cw, ch), cw, ch);
            let t = i as f64 / v.fps;
            let encoded = encoder
                .encode_at(&yuv, openh264::Timestamp::from_millis((t * 1000.0) as u64))
                .map_err(h264)?;
            let keyframe = encoded.frame_type() == openh264::encoder::FrameType::IDR;
            bitstream.clear();
            encoded.write_vec(&mut bitstream);
            if bitstream.is_empty() {
                return Err(invalid(format!(
                    "H.264 encoder produced no data for frame {i} ({:?})",
                    encoded.frame_type()
                )));
            }
            muxer
                .write_video(t, &bitstream, keyframe)
                .map_err(mux_err)?;
        }
        muxer.finish_in_place().map_err(mux_err)?;
        finish_file(muxer.into_writer(), tmp)
    })
}

// ---------------------------------------------------------------------------------------------
// GIF

/// Per-frame delays in centiseconds whose running sum tracks `i * 100 / fps`; at least 2 cs.
fn gif_delays(n: usize, fps: f64) -> Vec<u16> {
    let at = |i: usize| (i as f64 * 100.0 / fps).round();
    (0..n)
        .map(|i| (at(i + 1) - at(i)).clamp(2.0, u16::MAX as f64) as u16)
        .collect()
}

fn write_gif(v: &VideoFrames, path: &Path) -> Result<()> {
    let too_big = || {
        invalid(format!(
            "{}×{} is too large for GIF (at most 65535 per side)",
            v.width, v.height
        ))
    };
    let w = u16::try_from(v.width).map_err(|_| too_big())?;
    let h = u16::try_from(v.height).map_err(|_| too_big())?;
    write_atomic(path, |tmp| {
        let gif_err = |e: gif::EncodingError| match e {
            gif::EncodingError::Io(source) => PipelineError::Io {
                path: tmp.to_path_buf(),
                source,
            },
            e => invalid(format!("GIF encoder: {e}")),
        };
        let mut enc = gif::Encoder::new(create_file(tmp)?, w, h, &[]).map_err(gif_err)?;
        enc.set_repeat(gif::Repeat::Infinite).map_err(gif_err)?;
        use rayon::prelude::*;
        let delays = gif_delays(v.frames.len(), v.fps);
        // Quantise a batch of frames in parallel, then write them in order (bounded memory).
        for (batch, delays) in v.frames.chunks(16).zip(delays.chunks(16)) {
            let frames: Vec<gif::Frame<'static>> = batch
                .par_iter()
                .map(|rgb| gif::Frame::from_rgb_speed(w, h, rgb, GIF_SPEED))
                .collect();
            for (mut frame, &delay) in frames.into_iter().zip(delays) {
                frame.delay = delay;
                enc.write_frame(&frame).map_err(gif_err)?;
            }
        }
        let writer = enc.into_inner().map_err(gif_err)?;
        finish_file(writer, tmp)
    })
}

// ---------------------------------------------------------------------------------------------
// PNG frames

/// File name of frame `i` in a PNG frame folder.
pub fn png_frame_name(i: usize) -> String {
    format!("frame_{i:04}.png")
}

fn is_png_frame_name(name: &str) -> bool {
    name.strip_prefix("frame_")
        .and_then(|s| s.strip_suffix(".png"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn write_png(path: &Path, w: usize, h: usize, rgb: &[u8]) -> Result<()> {
    let png_err = |e: png::EncodingError| match e {
        png::EncodingError::IoError(source) => PipelineError::Io {
            path: path.to_path_buf(),
            source,
        },
        e => invalid(format!("{}: PNG encoder: {e}", path.display())),
    };
    let mut enc = png::Encoder::new(create_file(path)?, w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)
}

/// A sibling path of `target` with a hidden, process-unique name.
fn sibling(target: &Path, tag: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.{tag}", std::process::id()))
}

/// Fills a temp folder beside `dir` and renames it into place. An existing `dir` is replaced
/// only if it is empty or holds nothing but `frame_NNNN.png` files (an earlier run's output);
/// anything else is refused rather than deleted.
fn write_png_frames(v: &VideoFrames, dir: &Path) -> Result<()> {
    if dir.file_name().is_none() {
        return Err(PipelineError::Input {
            path: dir.to_path_buf(),
            message: "not usable as a PNG frame folder name".into(),
        });
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(PipelineError::Io {
                path: parent.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "output folder does not exist",
                ),
            });
        }
    }
    let replace_old = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(dir)(e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(PipelineError::Input {
                path: dir.to_path_buf(),
                message: "exists and is not a folder; refusing to replace it with PNG frames"
                    .into(),
            })
        }
        Ok(_) => {
            let mut any = false;
            for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
                let entry = entry.map_err(io_err(dir))?;
                let name = entry.file_name();
                let ours = name.to_str().is_some_and(is_png_frame_name)
                    && entry.file_type().map_err(io_err(dir))?.is_file();
                if !ours {
                    return Err(PipelineError::Input {
                        path: dir.to_path_buf(),
                        message: format!(
                            "folder holds '{}', which is not a frame_NNNN.png file; \
                             refusing to replace it",
                            name.to_string_lossy()
                        ),
                    });
                }
                any = true;
            }
            any
        }
    };

    let tmp = sibling(dir, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let fill = || -> Result<()> {
        std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        for (i, rgb) in v.frames.iter().enumerate() {
            write_png(&tmp.join(png_frame_name(i)), v.width, v.height, rgb)?;
        }
        Ok(())
    };
    if let Err(e) = fill() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }

    let result = if replace_old {
        // Move the old frames aside, put the new folder in place, then drop the old one.
        let old = sibling(dir, "old");
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old)
            .map_err(io_err(dir))
            .and_then(|()| match std::fs::rename(&tmp, dir) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&old);
                    Ok(())
                }
                Err(e) => {
                    let _ = std::fs::rename(&old, dir);
                    Err(io_err(dir)(e))
                }
            })
    } else {
        // Absent or empty: rename(2) replaces an empty folder atomically.
        std::fs::rename(&tmp, dir).map_err(io_err(dir))
    };
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_replicates_edges() {
        // 1×1 red pixel padded to 2×2.
        let p = pad_rgb(&[255, 0, 0], 1, 1, 2, 2);
        assert_eq!(p, [255, 0, 0].repeat(4));
        let p = pad_rgb(&[1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4], 2, 2, 3, 3);
        assert_eq!(
            p,
            [1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 3, 3, 3, 4, 4, 4, 4, 4, 4]
        );
    }

    #[test]
    fn coded_sizes_are_even_and_at_least_16() {
        assert_eq!(coded_side(1), 16);
        assert_eq!(coded_side(15), 16);
        assert_eq!(coded_side(17), 18);
        assert_eq!(coded_side(32), 32);
        assert_eq!(coded_side(33), 34);
    }

    #[test]
    fn bt601_limited_range_endpoints() {
        let black = rgb_to_i420(&[0; 12], 2, 2);
        assert_eq!(black, [16, 16, 16, 16, 128, 128]);
        let white = rgb_to_i420(&[255; 12], 2, 2);
        assert_eq!(white, [235, 235, 235, 235, 128, 128]);
        let red = rgb_to_i420(&[255, 0, 0].repeat(4), 2, 2);
        assert_eq!(red, [81, 81, 81, 81, 90, 240]); // the textbook BT.601 red
    }

    #[test]
    fn gif_delays_track_the_frame_rate() {
        let d = gif_delays(16, 16.0);
        assert_eq!(d.iter().map(|&x| x as u32).sum::<u32>(), 100);
        assert!(d.iter().all(|&x| x == 6 || x == 7));
        assert_eq!(gif_delays(3, 1000.0), [2, 2, 2]);
    }

    #[test]
    fn frame_names() {
        assert_eq!(png_frame_name(7), "frame_0007.png");
        assert!(is_png_frame_name("frame_12345.png"));
        assert!(!is_png_frame_name("frame_.png"));
        assert!(!is_png_frame_name("notes.txt"));
    }
}
