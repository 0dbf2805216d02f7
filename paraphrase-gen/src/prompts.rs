//! Prompts: which instructions paraphrase a passage, and how the temperature is drawn. The
//! defaults are the reference workflow's two instructions and its temperature range; users
//! replace them with a TOML or JSON file of the same shape.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const DEFAULT_PROMPTS: &str = r#"
# The reference workflow drew one of two instructions at random for every passage, and a
# temperature uniform in [0.5, 0.7].
temperature_min = 0.5
temperature_max = 0.7
max_tokens = 400

[[system]]
id = "assistant-v1"
text = "You are a careful editor. You rewrite passages faithfully, keeping their meaning, period vocabulary and named entities, without commentary."

[[user]]
id = "condense-4-5"
text = "Condense and paraphrase the following passage in 4-5 sentences. Reply with the paraphrase only.\n\n{text}"

[[user]]
id = "condense-2-3"
text = "Condense and paraphrase the following passage in 2-3 sentences. Reply with the paraphrase only.\n\n{text}"
"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub id: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSet {
    pub temperature_min: f32,
    pub temperature_max: f32,
    pub max_tokens: u32,
    /// One is drawn per request (may be empty: no system message).
    #[serde(default)]
    pub system: Vec<Prompt>,
    /// One is drawn per request; `{text}` is replaced by the passage.
    pub user: Vec<Prompt>,
}

impl PromptSet {
    pub fn default_set() -> Self {
        toml::from_str(DEFAULT_PROMPTS).expect("built-in prompts parse")
    }

    /// Reads a `.json` file, or TOML otherwise.
    pub fn load(path: &Path) -> Result<Self, String> {
        // Notepad and PowerShell save UTF-8 with a byte-order mark.
        let text = common::text::read_to_string(path).map_err(|e| e.to_string())?;
        let set: PromptSet = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        };
        set.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(set)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.user.is_empty() {
            return Err("no user prompt".into());
        }
        if let Some(p) = self.user.iter().find(|p| !p.text.contains("{text}")) {
            return Err(format!(
                "user prompt {:?} has no {{text}} placeholder",
                p.id
            ));
        }
        let ok = 0.0 <= self.temperature_min
            && self.temperature_min <= self.temperature_max
            && self.temperature_max <= 2.0;
        if !ok {
            return Err(format!(
                "temperature range [{}, {}] is not within [0, 2]",
                self.temperature_min, self.temperature_max
            ));
        }
        Ok(())
    }

    /// A short hash of everything that shapes an answer, so stored answers are reused only
    /// for the same prompts.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("prompts serialize");
        hex::encode(&Sha256::digest(json)[..8])
    }
}
