//! The caption grammar, its printer and parser, and the word vocabulary.
//!
//! Grammar (tokens are separated by spaces; "," is its own token):
//!
//! ```text
//! caption    := object ("and" object){0,2} "on" article bg_colour [pattern] "background"
//!               ["," "camera" "panning" pan]
//! object     := article colour shape motion
//! motion     := "staying" "still"
//!             | "moving" direction
//!             | "bouncing" ("horizontally" | "vertically")
//! direction  := "left" | "right" | "up" | "down"
//!             | "up" "left" | "up" "right" | "down" "left" | "down" "right"
//! article    := "a" | "an"            ("an" before "orange"; the parser accepts either)
//! colour     := red | orange | yellow | green | cyan | blue | purple | magenta
//! bg_colour  := colour | "gray"
//! shape      := circle | square | triangle | ring
//! pattern    := gradient | striped | checkered | textured   (absent = plain)
//! pan        := left | right | up | down
//! ```
//!
//! Example: `a red circle moving left and an orange ring bouncing vertically on a blue
//! striped background, camera panning right`.

use crate::scene::{
    Axis, BgColour, Colour, Direction, Motion, ObjectSpec, Pan, Pattern, SceneSpec, Shape,
};
use crate::{Result, ShapesError};

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The caption of a scene (see the module docs for the grammar).
pub fn caption(spec: &SceneSpec) -> String {
    let mut words: Vec<&str> = Vec::with_capacity(24);
    for (i, o) in spec.objects.iter().enumerate() {
        if i > 0 {
            words.push("and");
        }
        words.push(article(o.colour.name()));
        words.push(o.colour.name());
        words.push(o.shape.name());
        words.extend(o.motion.words());
    }
    words.push("on");
    words.push(article(spec.background.colour.name()));
    words.push(spec.background.colour.name());
    if let Some(p) = spec.background.pattern.word() {
        words.push(p);
    }
    words.push("background");
    let mut s = words.join(" ");
    if let Some(pan) = spec.camera {
        s.push_str(", camera panning ");
        s.push_str(pan.word());
    }
    s
}

/// Splits a caption into vocabulary words: lower-cased, split on whitespace, "," as its
/// own token.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        let lower = chunk.to_lowercase();
        let mut rest = lower.as_str();
        while let Some(i) = rest.find(',') {
            if i > 0 {
                out.push(rest[..i].to_string());
            }
            out.push(",".to_string());
            rest = &rest[i + 1..];
        }
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

/// Every word a caption can contain, in a fixed order (35 words). A word-level tokenizer
/// built from this list covers every caption.
pub fn vocabulary() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = vec!["a", "an"];
    v.extend(Colour::ALL.iter().map(|c| c.name()));
    v.push("gray");
    v.extend(Shape::ALL.iter().map(|s| s.name()));
    v.extend(["staying", "still", "moving", "bouncing"]);
    v.extend(["left", "right", "up", "down"]);
    v.extend(["horizontally", "vertically"]);
    v.extend(["and", "on", "background"]);
    v.extend(Pattern::ALL.iter().filter_map(|p| p.word()));
    v.extend([",", "camera", "panning"]);
    v
}

struct Parser<'a> {
    toks: &'a [String],
    pos: usize,
    text: &'a str,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.pos).map(|s| s.as_str())
    }

    fn err(&self, what: &str) -> ShapesError {
        ShapesError::Parse {
            caption: self.text.to_string(),
            position: self.pos,
            message: match self.peek() {
                Some(t) => format!("expected {what}, found {t:?}"),
                None => format!("expected {what}, found the end"),
            },
        }
    }

    fn next(&mut self, what: &str) -> Result<&'a str> {
        let t = self.peek().ok_or_else(|| self.err(what))?;
        self.pos += 1;
        Ok(t)
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        if self.peek() == Some(word) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("{word:?}")))
        }
    }

    fn article(&mut self) -> Result<()> {
        match self.peek() {
            Some("a") | Some("an") => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.err("\"a\" or \"an\"")),
        }
    }

    fn object(&mut self) -> Result<ObjectSpec> {
        self.article()?;
        let colour = self
            .peek()
            .and_then(Colour::from_name)
            .ok_or_else(|| self.err("an object colour"))?;
        self.pos += 1;
        let shape = self
            .peek()
            .and_then(Shape::from_name)
            .ok_or_else(|| self.err("a shape"))?;
        self.pos += 1;
        let motion = match self.peek() {
            Some("staying") => {
                self.pos += 1;
                self.expect("still")?;
                Motion::Still
            }
            Some("moving") => {
                self.pos += 1;
                let first = self.next("a direction")?;
                let second = match (first, self.peek()) {
                    ("up" | "down", Some(w @ ("left" | "right"))) => {
                        self.pos += 1;
                        Some(w)
                    }
                    _ => None,
                };
                let d = match (first, second) {
                    ("left", None) => Direction::Left,
                    ("right", None) => Direction::Right,
                    ("up", None) => Direction::Up,
                    ("down", None) => Direction::Down,
                    ("up", Some("left")) => Direction::UpLeft,
                    ("up", Some("right")) => Direction::UpRight,
                    ("down", Some("left")) => Direction::DownLeft,
                    ("down", Some("right")) => Direction::DownRight,
                    _ => {
                        self.pos -= 1;
                        return Err(self.err("a direction"));
                    }
                };
                Motion::Moving(d)
            }
            Some("bouncing") => {
                self.pos += 1;
                let axis = match self.peek() {
                    Some("horizontally") => Axis::Horizontal,
                    Some("vertically") => Axis::Vertical,
                    _ => return Err(self.err("\"horizontally\" or \"vertically\"")),
                };
                self.pos += 1;
                Motion::Bouncing(axis)
            }
            _ => return Err(self.err("\"staying\", \"moving\" or \"bouncing\"")),
        };
        Ok(ObjectSpec {
            colour,
            shape,
            motion,
        })
    }
}

/// Parses a caption of the grammar in the module docs back into a scene, and validates
/// it ([`SceneSpec::validate`]). `parse_caption(&caption(s)) == Ok(s)` for every valid `s`.
pub fn parse_caption(text: &str) -> Result<SceneSpec> {
    let toks = tokenize(text);
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        text,
    };
    let mut objects = vec![p.object()?];
    while p.peek() == Some("and") {
        p.pos += 1;
        objects.push(p.object()?);
    }
    p.expect("on")?;
    p.article()?;
    let colour = p
        .peek()
        .and_then(BgColour::from_name)
        .ok_or_else(|| p.err("a background colour"))?;
    p.pos += 1;
    let pattern = match p.peek() {
        Some("background") => Pattern::Plain,
        Some(w) => {
            let pat = Pattern::ALL
                .into_iter()
                .find(|pt| pt.word() == Some(w))
                .ok_or_else(|| p.err("a pattern or \"background\""))?;
            p.pos += 1;
            pat
        }
        None => return Err(p.err("\"background\"")),
    };
    p.expect("background")?;
    let camera = if p.peek() == Some(",") {
        p.pos += 1;
        p.expect("camera")?;
        p.expect("panning")?;
        let pan = p
            .peek()
            .and_then(|w| Pan::ALL.into_iter().find(|pn| pn.word() == w))
            .ok_or_else(|| p.err("a pan direction"))?;
        p.pos += 1;
        Some(pan)
    } else {
        None
    };
    if p.pos != toks.len() {
        return Err(p.err("the end of the caption"));
    }
    let spec = SceneSpec {
        objects,
        background: crate::scene::Background { colour, pattern },
        camera,
    };
    spec.validate()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::sample_scene;

    #[test]
    fn example_caption() {
        let s = parse_caption(
            "a red circle moving left and an orange ring bouncing vertically on a blue \
             striped background, camera panning right",
        )
        .unwrap();
        assert_eq!(s.objects.len(), 2);
        assert_eq!(s.objects[0].motion, Motion::Moving(Direction::Left));
        assert_eq!(s.objects[1].colour, Colour::Orange);
        assert_eq!(s.objects[1].motion, Motion::Bouncing(Axis::Vertical));
        assert_eq!(s.background.colour, BgColour::Tint(Colour::Blue));
        assert_eq!(s.background.pattern, Pattern::Striped);
        assert_eq!(s.camera, Some(Pan::Right));
        let one = parse_caption("a green square staying still on a gray background").unwrap();
        assert_eq!(
            caption(&one),
            "a green square staying still on a gray background"
        );
        let diag =
            parse_caption("a cyan triangle moving down right on an orange textured background")
                .unwrap();
        assert_eq!(diag.objects[0].motion, Motion::Moving(Direction::DownRight));
    }

    #[test]
    fn rejects_bad_captions() {
        for bad in [
            "",
            "a red circle",
            "a red circle moving on a blue background",
            "a red circle moving left on a blue background camera panning right",
            "a red circle moving left on a red background",
            "a red circle moving left and a red square staying still on a blue background",
            "a red circle moving sideways on a blue background",
            "a red circle moving left on a blue striped background, camera panning",
            "a red circle moving left on a blue striped background extra",
            "a gray circle moving left on a blue background",
            "a red circle moving left and a blue circle moving left and a green circle \
             moving left and a cyan circle moving left on a gray background",
        ] {
            assert!(parse_caption(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn every_caption_word_is_in_the_vocabulary() {
        let vocab = vocabulary();
        for seed in 0..3000 {
            for w in tokenize(&caption(&sample_scene(seed))) {
                assert!(vocab.contains(&w.as_str()), "{w:?} missing");
            }
        }
        let mut sorted = vocab.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), vocab.len(), "duplicate words");
    }
}
