//! The semantic content of a clip ([`SceneSpec`]), its sampler and the held-out split.
//!
//! A `SceneSpec` holds exactly what a caption says: the objects (colour, shape, motion), the
//! background (colour, pattern) and the camera pan. Everything else (sizes, positions,
//! speeds, stripe periods, exact tones) is nuisance variation drawn from the render seed.

use crate::rng::Rng;
use crate::{Result, ShapesError};

/// The eight saturated object colours. Each is identified by its HSV hue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Cyan,
    Blue,
    Purple,
    Magenta,
}

impl Colour {
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Cyan,
        Colour::Blue,
        Colour::Purple,
        Colour::Magenta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Cyan => "cyan",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
            Colour::Magenta => "magenta",
        }
    }

    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == word)
    }

    /// Nominal HSV hue in degrees. Neighbours are 30 to 60 degrees apart.
    pub fn hue(self) -> f32 {
        match self {
            Colour::Red => 0.0,
            Colour::Orange => 30.0,
            Colour::Yellow => 60.0,
            Colour::Green => 120.0,
            Colour::Cyan => 180.0,
            Colour::Blue => 240.0,
            Colour::Purple => 270.0,
            Colour::Magenta => 300.0,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Object shapes. Squares are axis-aligned; triangles are isosceles, apex up, as wide as tall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Ring,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Ring];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Ring => "ring",
        }
    }

    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == word)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The eight screen directions (image y grows downwards, so `Up` is -y).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Left,
    Right,
    Up,
    Down,
    UpLeft,
    UpRight,
    DownLeft,
    DownRight,
}

impl Direction {
    pub const ALL: [Direction; 8] = [
        Direction::Left,
        Direction::Right,
        Direction::Up,
        Direction::Down,
        Direction::UpLeft,
        Direction::UpRight,
        Direction::DownLeft,
        Direction::DownRight,
    ];

    /// Caption words: one word for the four cardinal directions, two for the diagonals
    /// ("up left").
    pub fn words(self) -> &'static [&'static str] {
        match self {
            Direction::Left => &["left"],
            Direction::Right => &["right"],
            Direction::Up => &["up"],
            Direction::Down => &["down"],
            Direction::UpLeft => &["up", "left"],
            Direction::UpRight => &["up", "right"],
            Direction::DownLeft => &["down", "left"],
            Direction::DownRight => &["down", "right"],
        }
    }

    /// Unit vector in image coordinates (x right, y down).
    pub fn unit(self) -> (f32, f32) {
        const D: f32 = std::f32::consts::FRAC_1_SQRT_2;
        match self {
            Direction::Left => (-1.0, 0.0),
            Direction::Right => (1.0, 0.0),
            Direction::Up => (0.0, -1.0),
            Direction::Down => (0.0, 1.0),
            Direction::UpLeft => (-D, -D),
            Direction::UpRight => (D, -D),
            Direction::DownLeft => (-D, D),
            Direction::DownRight => (D, D),
        }
    }

    /// The direction whose 45-degree sector contains the vector (dx, dy) (image coordinates).
    pub fn from_vector(dx: f32, dy: f32) -> Self {
        // Angle measured with y up, counter-clockwise from +x, in [0, 360).
        let a = (-dy).atan2(dx).to_degrees().rem_euclid(360.0);
        let sector = (((a + 22.5) / 45.0).floor() as usize) % 8;
        [
            Direction::Right,
            Direction::UpRight,
            Direction::Up,
            Direction::UpLeft,
            Direction::Left,
            Direction::DownLeft,
            Direction::Down,
            Direction::DownRight,
        ][sector]
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Axis of a bouncing motion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Axis {
    Horizontal,
    Vertical,
}

impl Axis {
    pub const ALL: [Axis; 2] = [Axis::Horizontal, Axis::Vertical];

    pub fn word(self) -> &'static str {
        match self {
            Axis::Horizontal => "horizontally",
            Axis::Vertical => "vertically",
        }
    }
}

/// How an object moves over the clip (in world coordinates; see [`Pan`] for the camera).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Motion {
    /// "staying still"
    Still,
    /// "moving `direction`": constant velocity.
    Moving(Direction),
    /// "bouncing horizontally|vertically": moves along the axis, reverses once mid-clip.
    Bouncing(Axis),
}

impl Motion {
    /// All 11 motions, in index order.
    pub const ALL: [Motion; 11] = [
        Motion::Still,
        Motion::Moving(Direction::Left),
        Motion::Moving(Direction::Right),
        Motion::Moving(Direction::Up),
        Motion::Moving(Direction::Down),
        Motion::Moving(Direction::UpLeft),
        Motion::Moving(Direction::UpRight),
        Motion::Moving(Direction::DownLeft),
        Motion::Moving(Direction::DownRight),
        Motion::Bouncing(Axis::Horizontal),
        Motion::Bouncing(Axis::Vertical),
    ];

    pub fn index(self) -> usize {
        match self {
            Motion::Still => 0,
            Motion::Moving(d) => 1 + d.index(),
            Motion::Bouncing(Axis::Horizontal) => 9,
            Motion::Bouncing(Axis::Vertical) => 10,
        }
    }

    /// The caption words of this motion ("staying still", "moving up left", ...).
    pub fn words(self) -> Vec<&'static str> {
        match self {
            Motion::Still => vec!["staying", "still"],
            Motion::Moving(d) => {
                let mut w = vec!["moving"];
                w.extend_from_slice(d.words());
                w
            }
            Motion::Bouncing(a) => vec!["bouncing", a.word()],
        }
    }
}

/// Background colour: a muted tint of one of the object hues, or neutral gray.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BgColour {
    Gray,
    Tint(Colour),
}

impl BgColour {
    pub const ALL: [BgColour; 9] = [
        BgColour::Gray,
        BgColour::Tint(Colour::Red),
        BgColour::Tint(Colour::Orange),
        BgColour::Tint(Colour::Yellow),
        BgColour::Tint(Colour::Green),
        BgColour::Tint(Colour::Cyan),
        BgColour::Tint(Colour::Blue),
        BgColour::Tint(Colour::Purple),
        BgColour::Tint(Colour::Magenta),
    ];

    pub fn name(self) -> &'static str {
        match self {
            BgColour::Gray => "gray",
            BgColour::Tint(c) => c.name(),
        }
    }

    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == word)
    }
}

/// Background pattern. `Plain` has no caption word ("on a blue background").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    Plain,
    Gradient,
    Striped,
    Checkered,
    Textured,
}

impl Pattern {
    pub const ALL: [Pattern; 5] = [
        Pattern::Plain,
        Pattern::Gradient,
        Pattern::Striped,
        Pattern::Checkered,
        Pattern::Textured,
    ];

    /// The caption word, `None` for `Plain`.
    pub fn word(self) -> Option<&'static str> {
        match self {
            Pattern::Plain => None,
            Pattern::Gradient => Some("gradient"),
            Pattern::Striped => Some("striped"),
            Pattern::Checkered => Some("checkered"),
            Pattern::Textured => Some("textured"),
        }
    }
}

/// Camera pan direction: the camera moves this way, so the whole picture (background and
/// objects) drifts the opposite way on screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pan {
    Left,
    Right,
    Up,
    Down,
}

impl Pan {
    pub const ALL: [Pan; 4] = [Pan::Left, Pan::Right, Pan::Up, Pan::Down];

    pub fn word(self) -> &'static str {
        match self {
            Pan::Left => "left",
            Pan::Right => "right",
            Pan::Up => "up",
            Pan::Down => "down",
        }
    }

    /// Unit vector of the camera's motion in image coordinates.
    pub fn unit(self) -> (f32, f32) {
        match self {
            Pan::Left => (-1.0, 0.0),
            Pan::Right => (1.0, 0.0),
            Pan::Up => (0.0, -1.0),
            Pan::Down => (0.0, 1.0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectSpec {
    pub colour: Colour,
    pub shape: Shape,
    pub motion: Motion,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Background {
    pub colour: BgColour,
    pub pattern: Pattern,
}

/// Everything a caption says about a clip.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SceneSpec {
    /// 1 to 3 objects with distinct colours, in caption and drawing order (later on top).
    pub objects: Vec<ObjectSpec>,
    /// Its colour is never the colour of an object in the scene.
    pub background: Background,
    pub camera: Option<Pan>,
}

/// Most objects in a scene.
pub const MAX_OBJECTS: usize = 3;

impl SceneSpec {
    /// Checks the invariants the renderer and checker rely on: 1 to 3 objects, distinct
    /// object colours, background colour different from every object colour.
    pub fn validate(&self) -> Result<()> {
        let n = self.objects.len();
        if n == 0 || n > MAX_OBJECTS {
            return Err(ShapesError::InvalidScene(format!(
                "a scene has 1 to {MAX_OBJECTS} objects, got {n}"
            )));
        }
        for (i, a) in self.objects.iter().enumerate() {
            if self.objects[..i].iter().any(|b| b.colour == a.colour) {
                return Err(ShapesError::InvalidScene(format!(
                    "two objects are {}",
                    a.colour.name()
                )));
            }
            if self.background.colour == BgColour::Tint(a.colour) {
                return Err(ShapesError::InvalidScene(format!(
                    "the background has the colour of the {} object",
                    a.colour.name()
                )));
            }
        }
        Ok(())
    }

    /// True when nothing moves: every object still and no camera pan.
    pub fn is_static(&self) -> bool {
        self.camera.is_none() && self.objects.iter().all(|o| o.motion == Motion::Still)
    }

    /// This scene with one thing about its first object changed, in this order: its
    /// direction reversed (a still or bouncing object stays as it is), its colour replaced by
    /// one no object or background of the scene has, its shape replaced by the next shape. The
    /// diagnostics ask a model which of these words it uses.
    pub fn first_object_alterations(&self) -> [SceneSpec; 3] {
        let with = |f: &dyn Fn(&mut ObjectSpec)| {
            let mut spec = self.clone();
            f(&mut spec.objects[0]);
            spec
        };
        let spare = Colour::ALL
            .into_iter()
            .find(|c| {
                !self.objects.iter().any(|o| o.colour == *c)
                    && self.background.colour != BgColour::Tint(*c)
            })
            .expect("8 colours, at most 3 objects and 1 background");
        let other = Shape::ALL[(self.objects[0].shape.index() + 1) % Shape::ALL.len()];
        [
            with(&|o| {
                if let Motion::Moving(d) = o.motion {
                    let (x, y) = d.unit();
                    o.motion = Motion::Moving(Direction::from_vector(-x, -y));
                }
            }),
            with(&|o| o.colour = spare),
            with(&|o| o.shape = other),
        ]
    }
}

/// Probability that a sampled scene has a camera pan.
pub const PAN_PROBABILITY: f32 = 0.25;

/// A scene drawn uniformly from the whole caption space (train and held-out alike):
/// 1 to 3 objects (uniform), distinct colours, uniform shapes and motions, a background
/// colour uniform among those not used by an object, a uniform pattern, and a pan with
/// probability [`PAN_PROBABILITY`].
pub fn sample_scene(seed: u64) -> SceneSpec {
    let mut rng = Rng::stream(seed, 0x5CE4E);
    let n = 1 + rng.below(MAX_OBJECTS);
    let mut colours = Colour::ALL;
    rng.shuffle(&mut colours);
    let objects: Vec<ObjectSpec> = colours[..n]
        .iter()
        .map(|&colour| ObjectSpec {
            colour,
            shape: rng.pick(&Shape::ALL),
            motion: rng.pick(&Motion::ALL),
        })
        .collect();
    let bg_choices: Vec<BgColour> = BgColour::ALL
        .into_iter()
        .filter(|b| !objects.iter().any(|o| *b == BgColour::Tint(o.colour)))
        .collect();
    let background = Background {
        colour: rng.pick(&bg_choices),
        pattern: rng.pick(&Pattern::ALL),
    };
    let camera = if rng.chance(PAN_PROBABILITY) {
        Some(rng.pick(&Pan::ALL))
    } else {
        None
    };
    SceneSpec {
        objects,
        background,
        camera,
    }
}

/// The held-out (colour, shape, motion) triples:
/// `(colour.index() + 3 * shape.index() + 5 * motion.index()) % 7 == 0`.
///
/// About 1/7 of the 352 triples (50 of them). Because 3 and 5 are invertible mod 7, for any
/// fixed pair of attributes at most one shape, at most two colours and at most two motions
/// complete it to a held-out triple, so every colour-shape, colour-motion and shape-motion
/// pair still occurs in training: the held-out triples are new *combinations* of seen parts.
#[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
pub fn is_held_out_triple(colour: Colour, shape: Shape, motion: Motion) -> bool {
    (colour.index() + 3 * shape.index() + 5 * motion.index()) % 7 == 0
}

/// A scene is held out (evaluation only) when any of its objects is a held-out triple.
pub fn is_held_out(spec: &SceneSpec) -> bool {
    spec.objects
        .iter()
        .any(|o| is_held_out_triple(o.colour, o.shape, o.motion))
}

/// A training scene: [`sample_scene`] draws (re-drawn deterministically) until the scene is
/// not held out.
pub fn sample_train(seed: u64) -> SceneSpec {
    (0u64..)
        .map(|attempt| sample_scene(crate::rng::mix(seed, attempt)))
        .find(|s| !is_held_out(s))
        .expect("unbounded search")
}

/// A single straight mover: one object moving in one of the eight directions, with no camera
/// pan. The trainer's curriculum (`single_mover_fraction`) draws these so that each clip's
/// motion is set by its caption's direction words alone, with no other object to bind them
/// to and no pan to subtract.
pub fn is_single_mover(spec: &SceneSpec) -> bool {
    matches!(spec.objects.as_slice(), [o] if matches!(o.motion, Motion::Moving(_)))
        && spec.camera.is_none()
}

/// A training scene that is a single straight mover: [`sample_train`]'s distribution
/// conditioned on [`is_single_mover`] (re-drawn deterministically until it is one).
pub fn sample_single_mover(seed: u64) -> SceneSpec {
    (0u64..)
        .map(|attempt| sample_train(crate::rng::mix(seed ^ 0x51_6E1E_0000_0000, attempt)))
        .find(is_single_mover)
        .expect("unbounded search")
}

/// Two or three objects, each moving straight in its own direction (no two alike), with no
/// camera pan. The trainer's binding curriculum (`multi_mover_fraction`) draws these: a
/// model that follows the direction words on single movers must still tell which object
/// each direction belongs to, and in these clips every object's direction is different, so
/// swapping them is always wrong.
pub fn is_multi_mover(spec: &SceneSpec) -> bool {
    let objects = &spec.objects;
    objects.len() >= 2
        && spec.camera.is_none()
        && objects.iter().enumerate().all(|(i, o)| {
            matches!(o.motion, Motion::Moving(_))
                && objects[..i].iter().all(|p| p.motion != o.motion)
        })
}

/// A training scene that is a multi mover: [`sample_train`]'s distribution conditioned on
/// [`is_multi_mover`] (re-drawn deterministically until it is one).
pub fn sample_multi_mover(seed: u64) -> SceneSpec {
    (0u64..)
        .map(|attempt| sample_train(crate::rng::mix(seed ^ 0x3017_1000_0000_0000, attempt)))
        .find(is_multi_mover)
        .expect("unbounded search")
}

/// An evaluation scene: [`sample_scene`] draws until the scene is held out, i.e. it contains
/// at least one held-out triple.
pub fn sample_eval(seed: u64) -> SceneSpec {
    (0u64..)
        .map(|attempt| sample_scene(crate::rng::mix(seed ^ 0xE7A1_0000_0000_0000, attempt)))
        .find(is_held_out)
        .expect("unbounded search")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_sectors() {
        for d in Direction::ALL {
            let (x, y) = d.unit();
            assert_eq!(Direction::from_vector(x, y), d);
            // 20 degrees off still lands in the same sector.
            let (s, c) = 20f32.to_radians().sin_cos();
            assert_eq!(Direction::from_vector(x * c - y * s, x * s + y * c), d);
        }
    }

    #[test]
    fn alterations_change_one_thing_of_the_first_object() {
        for seed in 0..50 {
            let spec = sample_train(seed);
            let [reversed, recoloured, reshaped] = spec.first_object_alterations();
            let (o, r) = (spec.objects[0], reversed.objects[0]);
            match (o.motion, r.motion) {
                (Motion::Moving(a), Motion::Moving(b)) => {
                    let ((ax, ay), (bx, by)) = (a.unit(), b.unit());
                    assert!(
                        (ax + bx).abs() < 1e-6 && (ay + by).abs() < 1e-6,
                        "{a:?} {b:?}"
                    );
                }
                (a, b) => assert_eq!(a, b),
            }
            let c = recoloured.objects[0].colour;
            assert!(spec.objects.iter().all(|x| x.colour != c));
            assert_ne!(spec.background.colour, BgColour::Tint(c));
            assert_ne!(reshaped.objects[0].shape, o.shape);
            recoloured.validate().unwrap();
            for alt in [&reversed, &recoloured, &reshaped] {
                assert_eq!(alt.objects[1..], spec.objects[1..]);
                assert_eq!((alt.background, alt.camera), (spec.background, spec.camera));
            }
        }
    }

    #[test]
    fn motion_index_matches_all() {
        for (i, m) in Motion::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }

    #[test]
    fn single_movers_are_one_straight_mover_without_pan_from_the_training_part() {
        let mut directions = std::collections::HashSet::new();
        for seed in 0..400 {
            let spec = sample_single_mover(seed);
            spec.validate().unwrap();
            assert!(!is_held_out(&spec), "seed {seed}: held-out scene");
            assert_eq!(spec.objects.len(), 1, "seed {seed}");
            assert_eq!(spec.camera, None, "seed {seed}");
            match spec.objects[0].motion {
                Motion::Moving(d) => directions.insert(d),
                other => panic!("seed {seed}: {other:?}"),
            };
        }
        assert_eq!(directions.len(), 8, "every direction is drawn");
        let mixed = (0..400).map(sample_train).filter(is_single_mover).count();
        assert!(
            (20..120).contains(&mixed),
            "{mixed} of 400 plain training scenes"
        );
    }

    #[test]
    fn multi_movers_are_two_or_three_straight_movers_in_different_directions() {
        let mut counts = [0usize; 4];
        let mut directions = std::collections::HashSet::new();
        for seed in 0..400 {
            let spec = sample_multi_mover(seed);
            spec.validate().unwrap();
            assert!(!is_held_out(&spec), "seed {seed}: held-out scene");
            assert_eq!(spec.camera, None, "seed {seed}");
            counts[spec.objects.len()] += 1;
            let mut seen = Vec::new();
            for o in &spec.objects {
                match o.motion {
                    Motion::Moving(d) => {
                        assert!(!seen.contains(&d), "seed {seed}: {d:?} twice");
                        seen.push(d);
                        directions.insert(d);
                    }
                    other => panic!("seed {seed}: {other:?}"),
                }
            }
        }
        assert_eq!(counts[..2], [0, 0]);
        assert!(counts[2] > 100 && counts[3] > 50, "{counts:?}");
        assert_eq!(directions.len(), 8, "every direction is drawn");
        // Not a multi mover: one object, a pan, a still object, or two alike.
        let spec = sample_multi_mover(7);
        let mut one = spec.clone();
        one.objects.truncate(1);
        let mut panned = spec.clone();
        panned.camera = Some(Pan::Left);
        let mut still = spec.clone();
        still.objects[1].motion = Motion::Still;
        let mut alike = spec.clone();
        alike.objects[1].motion = alike.objects[0].motion;
        for s in [one, panned, still, alike] {
            assert!(!is_multi_mover(&s), "{s:?}");
        }
    }

    #[test]
    fn sampled_scenes_are_valid() {
        for seed in 0..2000 {
            sample_scene(seed).validate().unwrap();
        }
    }
}
