//! What a voice call says: the router's text rendered by `tocsin-voice` into an 8 kHz
//! prompt for every voice bearer (SIP trunks and modem calls take the same
//! `tocsin_channel::voice::PromptSource`).
//!
//! The router gives every attempt the same text it sends by SMS, which ends with the
//! person's one-time code (`回复 1 K7QX 确认`). On a call the code is useless — the ack is
//! the key press in the person's own call — and speaking it would make every call's prompt
//! different. So the reply instruction is cut off, the spoken instruction (按1确认) is
//! said instead, and one rendering serves every call of a campaign.
//!
//! A door-knock task's call (【叫应升级】…) says what its key does there: key 1 ACCEPTS the
//! task (the router records the supervisor as on the way); the visit itself is confirmed
//! afterwards with the task's code by text message, as the task's SMS says.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tocsin_channel::voice::PromptSource;
use tocsin_voice::{Attention, Prompt, Speech};

/// The mark the router puts in front of every exercise message.
const EXERCISE_MARK: &str = "【演练】";

/// The mark that opens every door-knock task the router sends.
const TASK_MARK: &str = "【叫应升级】";

/// What a door-knock task's call asks: key 1 accepts the task, the visit is confirmed by
/// SMS with the task's code once done.
pub const TASK_INSTRUCTION: &str = "按1表示收到任务。上门核实后，请按短信回复确认已上门";

/// Rendered prompts kept, by spoken text (a campaign speaks a handful: the warning, the
/// door-knock task per person, an update).
const PROMPTS_KEPT: usize = 64;

/// The voice drivers' prompt source over the daemon's speech renderer.
pub struct CallPrompts {
    speech: Arc<Speech>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Arc<[i16]>>,
    order: VecDeque<String>,
}

impl CallPrompts {
    /// Prompts spoken by `speech`.
    pub fn new(speech: Arc<Speech>) -> CallPrompts {
        CallPrompts {
            speech,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Renders and caches the prompt for `text` ahead of the first call, so the first
    /// call of a campaign does not wait for the synthesizer.
    pub fn warm(&self, text: &str) {
        let _ = self.render(text);
    }
}

/// What is spoken for a router text: whether it is an exercise, and the text without the
/// exercise mark and without the trailing reply instruction with its code.
pub fn spoken_text(text: &str) -> (bool, String) {
    let text = text.trim();
    let (exercise, rest) = match text.strip_prefix(EXERCISE_MARK) {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    // The router always puts its reply instruction last (`回复 1 CODE 确认…`).
    let body = match rest.rfind("回复") {
        Some(i) if i > 0 => rest.get(..i).unwrap_or(rest),
        _ => rest,
    };
    (exercise, body.trim().to_owned())
}

/// What a call asks after `body` (its spoken text): the configured instruction (按1确认),
/// or for a door-knock task that key 1 accepts the task and the visit is confirmed by SMS.
pub fn call_instruction<'a>(body: &str, configured: &'a str) -> &'a str {
    if body.starts_with(TASK_MARK) {
        TASK_INSTRUCTION
    } else {
        configured
    }
}

impl PromptSource for CallPrompts {
    fn render(&self, text: &str) -> Arc<[i16]> {
        let (exercise, body) = spoken_text(text);
        let key = format!("{exercise}:{body}");
        if let Some(hit) = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.map.get(&key).cloned())
        {
            return hit;
        }
        let instruction = call_instruction(&body, self.speech.instruction());
        let rendered = self.speech.render(&Prompt {
            attention: Attention::Tone,
            text: body,
            instruction: Some(instruction.to_owned()),
            exercise,
        });
        if !rendered.missing.is_empty() {
            tracing::debug!(missing = ?rendered.missing, "call prompt without some phrases");
        }
        let audio: Arc<[i16]> = rendered.audio.samples.into();
        if let Ok(mut c) = self.cache.lock() {
            if c.map.insert(key.clone(), audio.clone()).is_none() {
                c.order.push_back(key);
            }
            while c.order.len() > PROMPTS_KEPT {
                if let Some(old) = c.order.pop_front() {
                    c.map.remove(&old);
                }
            }
        }
        audio
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_code_and_the_exercise_mark_are_not_spoken() {
        assert_eq!(
            spoken_text("【红色预警】山洪红色预警：请立即转移 回复 1 K7QX 确认"),
            (false, "【红色预警】山洪红色预警：请立即转移".to_owned())
        );
        assert_eq!(
            spoken_text("【演练】【红色预警】山洪：请转移 回复 1 AB12 确认"),
            (true, "【红色预警】山洪：请转移".to_owned())
        );
        assert_eq!(
            spoken_text(
                "【叫应升级】孙一（石门镇）未确认红色预警“山洪”，请上门确认。回复 1 ZZ99 确认已上门。"
            ),
            (
                false,
                "【叫应升级】孙一（石门镇）未确认红色预警“山洪”，请上门确认。".to_owned()
            )
        );
        assert_eq!(spoken_text("  只有正文  "), (false, "只有正文".to_owned()));
    }

    #[test]
    fn one_rendering_serves_every_call_of_a_campaign() {
        // No synthesizer: the prompt is the attention tone (the phrases are missing), which
        // is what a kit without espeak-ng plays.
        let speech = Arc::new(Speech::new(None, HashMap::new(), 4));
        let prompts = CallPrompts::new(speech);
        let a = prompts.render("【红色预警】山洪：请转移 回复 1 AAAA 确认");
        let b = prompts.render("【红色预警】山洪：请转移 回复 1 BBBB 确认");
        assert!(!a.is_empty());
        assert!(
            Arc::ptr_eq(&a, &b),
            "the per-person code must not defeat the cache"
        );
        let loud = a.iter().filter(|s| s.unsigned_abs() > 1000).count();
        assert!(loud > 800, "the attention tone is audible: {loud}");
        let c = prompts.render("【演练】【红色预警】山洪：请转移 回复 1 AAAA 确认");
        assert!(!Arc::ptr_eq(&a, &c), "an exercise is rendered on its own");
    }

    #[test]
    fn a_door_knock_call_says_key_1_accepts_the_task() {
        let speech = Arc::new(Speech::new(None, HashMap::new(), 4));
        let prompts = CallPrompts::new(speech.clone());
        let task =
            "【叫应升级】孙一（石门镇）未确认红色预警“山洪”，请上门确认。回复 1 ZZ99 确认已上门。";
        let (exercise, body) = spoken_text(task);
        assert_eq!(call_instruction(&body, "按1确认"), TASK_INSTRUCTION);
        let (_, drill_task) = spoken_text(&format!("【演练】{task}"));
        assert_eq!(call_instruction(&drill_task, "按1确认"), TASK_INSTRUCTION);
        let (_, warning) = spoken_text("【红色预警】山洪：请转移 回复 1 AAAA 确认");
        assert_eq!(call_instruction(&warning, "按1确认"), "按1确认");
        let rendered = speech.render(&Prompt {
            attention: Attention::Tone,
            text: body,
            instruction: Some(TASK_INSTRUCTION.to_owned()),
            exercise,
        });
        // Without a synthesizer every phrase is missing: that lists what would be said.
        assert_eq!(
            rendered.missing.last().map(String::as_str),
            Some(TASK_INSTRUCTION),
            "{:?}",
            rendered.missing
        );
        assert!(!rendered.missing.iter().any(|m| m == "按1确认"));
        // The call prompt is rendered with the task's instruction, and on its own.
        let warning = prompts.render("【红色预警】山洪：请转移 回复 1 AAAA 确认");
        let call = prompts.render(task);
        assert!(!Arc::ptr_eq(&warning, &call));
    }
}
