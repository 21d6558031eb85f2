//! Chat templates: how `/v1/chat/completions` turns messages into the text
//! a generation model continues. A model's `config.toml` names its
//! template (`chat_template`); base models get `plain`.

/// One chat message, its content already flattened to text.
pub struct Message {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// What it says.
    pub content: String,
}

/// A chat template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// `Role: content` lines, then `Assistant:` for the model to continue;
    /// a base model is stopped when it starts the user's next turn.
    Plain,
    /// ChatML (`<|im_start|>role\n…<|im_end|>`), for models tuned on it.
    ChatMl,
}

impl Template {
    /// The template a config names (`None`: [`Template::Plain`]).
    pub fn named(name: Option<&str>) -> Result<Template, String> {
        match name {
            None | Some("plain") => Ok(Template::Plain),
            Some("chatml") => Ok(Template::ChatMl),
            Some(other) => Err(format!(
                "unknown chat_template \"{other}\" (known: plain, chatml)"
            )),
        }
    }

    /// The prompt for `messages`, ending where the assistant's reply begins.
    pub fn render(self, messages: &[Message]) -> String {
        let mut prompt = String::new();
        for message in messages {
            match self {
                Template::Plain => {
                    let mut role = message.role.chars();
                    let first = role.next().map(|c| c.to_ascii_uppercase());
                    prompt.extend(first);
                    prompt.push_str(role.as_str());
                    prompt.push_str(": ");
                    prompt.push_str(&message.content);
                    prompt.push('\n');
                }
                Template::ChatMl => {
                    prompt.push_str("<|im_start|>");
                    prompt.push_str(&message.role);
                    prompt.push('\n');
                    prompt.push_str(&message.content);
                    prompt.push_str("<|im_end|>\n");
                }
            }
        }
        prompt.push_str(match self {
            Template::Plain => "Assistant:",
            Template::ChatMl => "<|im_start|>assistant\n",
        });
        prompt
    }

    /// Stop sequences that end the assistant's turn.
    pub fn stops(self) -> &'static [&'static str] {
        match self {
            Template::Plain => &["\nUser:"],
            Template::ChatMl => &["<|im_end|>"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages() -> Vec<Message> {
        [("system", "Be brief."), ("user", "Hi")]
            .into_iter()
            .map(|(role, content)| Message {
                role: role.into(),
                content: content.into(),
            })
            .collect()
    }

    #[test]
    fn plain_ends_with_the_assistant_turn() {
        let prompt = Template::named(None).unwrap().render(&messages());
        assert_eq!(prompt, "System: Be brief.\nUser: Hi\nAssistant:");
    }

    #[test]
    fn chatml_wraps_each_message() {
        let prompt = Template::named(Some("chatml")).unwrap().render(&messages());
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(Template::named(Some("jinja")).is_err());
    }
}
