//! What a chat completion from an OpenAI-compatible server holds, read leniently. Servers differ
//! from OpenAI's schema in ways that are harmless for a paraphrase: TGI and sglang finish with
//! `"eos_token"` or `"stop_sequence"`, llama.cpp, Ollama and proxies leave out `id`, `created`,
//! `usage` or `logprobs`, some send the content as an array of text parts. Only
//! `choices[0].message` is required; everything else is taken when present and recorded
//! verbatim.
//!
//! Reasoning models served without a reasoning parser put their thinking in the content;
//! [`strip_reasoning`] cuts it away so that only the answer can become a paraphrase.

use serde_json::Value;

/// The parts of a chat completion a paraphrase needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    /// The message content: a string, or the text parts of a content array joined.
    pub content: Option<String>,
    /// OpenAI's `message.refusal`.
    pub refusal: Option<String>,
    /// As the server sent it (`stop`, `length`, `eos_token`, …); `None` when it sent none.
    pub finish_reason: Option<String>,
    /// The model that answered, when the server says.
    pub model: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

/// Reads a chat completion body. Errors (quoting the start of the body) when it has no first
/// choice with a message: then it is no answer at all (an error object sent with a 200, an
/// empty `choices`), and the row fails.
pub fn parse_completion(body: &Value) -> Result<Completion, String> {
    let snippet = || body.to_string().chars().take(200).collect::<String>();
    let choice = body
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| format!("no choice in the response: {}", snippet()))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| format!("no message in the response's choice: {}", snippet()))?;
    let content = match message.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let tokens = |name: &str| {
        body.get("usage")
            .and_then(|u| u.get(name))
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
    };
    Ok(Completion {
        content,
        refusal: text(message.get("refusal")).filter(|r| !r.trim().is_empty()),
        finish_reason: text(choice.get("finish_reason")),
        model: text(body.get("model")).filter(|m| !m.is_empty()),
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
    })
}

/// Tags reasoning models wrap their thinking in: `think` (DeepSeek-R1, Qwen3, QwQ and their
/// distillations), `thinking`, `reasoning` and `thought` (other open models' templates).
const REASONING_TAGS: [&str; 4] = ["think", "thinking", "reasoning", "thought"];
/// gpt-oss's harmony format: the answer follows the final channel's header.
const HARMONY_FINAL: &str = "<|channel|>final<|message|>";
const HARMONY_ANALYSIS: &str = "<|channel|>analysis";

/// The answer in `content` with any reasoning before it removed, trimmed: the text after the
/// last closing reasoning tag (`</think>`, also when the template opened `<think>` in the
/// prompt so only the closing tag is in the content), or after harmony's final-channel
/// header. Errors when there is reasoning but no answer after it (the token budget ran out
/// while thinking, or the answer is empty).
pub fn strip_reasoning(content: &str) -> Result<String, String> {
    if let Some(i) = content.rfind(HARMONY_FINAL) {
        let rest = &content[i + HARMONY_FINAL.len()..];
        // The answer ends at the next special token (`<|return|>`, `<|end|>`).
        let answer = rest.split("<|").next().unwrap_or_default().trim();
        return non_empty(answer, "harmony's final channel");
    }
    if content.contains(HARMONY_ANALYSIS) {
        return Err("only reasoning (harmony analysis channel), no final answer".into());
    }
    // ASCII lowercasing keeps byte offsets, so positions in `lower` index `content`.
    let lower = content.to_ascii_lowercase();
    for tag in REASONING_TAGS {
        let close = format!("</{tag}>");
        if let Some(i) = lower.rfind(&close) {
            return non_empty(content[i + close.len()..].trim(), &close);
        }
        if lower.trim_start().starts_with(&format!("<{tag}>")) {
            return Err(format!(
                "only reasoning: the <{tag}> block is never closed, no answer after it"
            ));
        }
    }
    Ok(content.trim().to_string())
}

fn non_empty(answer: &str, after: &str) -> Result<String, String> {
    if answer.is_empty() {
        Err(format!("only reasoning: nothing after {after}"))
    } else {
        Ok(answer.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasoning_is_cut_in_every_form() {
        let answer = "The President spoke of the tariff.";
        for content in [
            format!("<think>\nKeep the names.\n</think>\n\n{answer}"),
            format!("Keep the names.\n</think>\n{answer}"), // template opened <think>
            format!("<THINKING>plan</THINKING>{answer}"),
            format!("<reasoning>a</reasoning><think>b</think> {answer} "),
            format!("<|channel|>analysis<|message|>plan<|end|><|start|>assistant<|channel|>final<|message|>{answer}<|return|>"),
            answer.to_string(),
        ] {
            assert_eq!(strip_reasoning(&content).as_deref(), Ok(answer), "{content}");
        }
        for content in [
            "<think>\nThe user wants",
            "<think>plan</think>\n  ",
            "<|channel|>analysis<|message|>plan",
        ] {
            let e = strip_reasoning(content).unwrap_err();
            assert!(e.contains("only reasoning"), "{e}");
        }
    }

    #[test]
    fn completions_as_servers_send_them() {
        // TGI: no id, object, created, usage; its own finish reason.
        let tgi = json!({"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "eos_token"}]});
        let c = parse_completion(&tgi).unwrap();
        assert_eq!(c.finish_reason.as_deref(), Some("eos_token"));
        assert_eq!((c.content.as_deref(), c.prompt_tokens), (Some("x"), None));
        // Content as text parts, no finish reason, usage present.
        let parts = json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let c = parse_completion(&parts).unwrap();
        assert_eq!((c.content.as_deref(), c.finish_reason), (Some("ab"), None));
        assert_eq!((c.prompt_tokens, c.completion_tokens), (Some(3), Some(4)));
        // No answer in it.
        for body in [
            json!({"choices": []}),
            json!({"error": {"message": "overloaded"}}),
            json!([1]),
        ] {
            assert!(parse_completion(&body).is_err(), "{body}");
        }
    }
}
