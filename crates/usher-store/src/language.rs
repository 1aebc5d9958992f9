//! Detecting a contact's language from a message, so that language routing works on real
//! traffic where channels do not say the contact's language.
//!
//! Detection is `whatlang`'s trigram and alphabet models (69 languages, no model files, a few
//! microseconds a message). Only a confident detection is kept: a short "hi" or "ok" says
//! nothing, and a wrong guess would send the contact to agents who cannot read them. The
//! threshold, [`MIN_CONFIDENCE`], was set on a sample of support messages in six languages
//! (the tests keep it): every detection at or above it was right, every wrong one was below
//! (whatlang's own "reliable" mark, 0.9, rejected most right answers in English). The
//! result is an ISO 639-1 tag (`fr`), as agents' languages are written.

/// The least confidence a detection needs to be kept.
pub const MIN_CONFIDENCE: f64 = 0.15;

/// A detected language and how sure the detection is (0 to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detected {
    /// ISO 639-1 tag, e.g. `fr`.
    pub tag: &'static str,
    /// whatlang's confidence, 0 to 1.
    pub confidence: f64,
}

/// The language of `text`, when it can be told reliably.
pub fn detect(text: &str) -> Option<Detected> {
    let info = whatlang::detect(text)?;
    if info.confidence() < MIN_CONFIDENCE {
        return None;
    }
    Some(Detected { tag: iso_639_1(info.lang())?, confidence: info.confidence() })
}

/// whatlang names languages by ISO 639-3; agents' languages use the two-letter tags.
fn iso_639_1(lang: whatlang::Lang) -> Option<&'static str> {
    const TABLE: &[(&str, &str)] = &[
        ("afr", "af"),
        ("aka", "ak"),
        ("amh", "am"),
        ("ara", "ar"),
        ("aze", "az"),
        ("bel", "be"),
        ("ben", "bn"),
        ("bul", "bg"),
        ("cat", "ca"),
        ("ces", "cs"),
        ("cmn", "zh"),
        ("cym", "cy"),
        ("dan", "da"),
        ("deu", "de"),
        ("ell", "el"),
        ("eng", "en"),
        ("epo", "eo"),
        ("est", "et"),
        ("fin", "fi"),
        ("fra", "fr"),
        ("guj", "gu"),
        ("heb", "he"),
        ("hin", "hi"),
        ("hrv", "hr"),
        ("hun", "hu"),
        ("hye", "hy"),
        ("ind", "id"),
        ("ita", "it"),
        ("jav", "jv"),
        ("jpn", "ja"),
        ("kan", "kn"),
        ("kat", "ka"),
        ("khm", "km"),
        ("kor", "ko"),
        ("lat", "la"),
        ("lav", "lv"),
        ("lit", "lt"),
        ("mal", "ml"),
        ("mar", "mr"),
        ("mkd", "mk"),
        ("mya", "my"),
        ("nep", "ne"),
        ("nld", "nl"),
        ("nob", "nb"),
        ("ori", "or"),
        ("pan", "pa"),
        ("pes", "fa"),
        ("pol", "pl"),
        ("por", "pt"),
        ("ron", "ro"),
        ("rus", "ru"),
        ("sin", "si"),
        ("slk", "sk"),
        ("slv", "sl"),
        ("sna", "sn"),
        ("spa", "es"),
        ("srp", "sr"),
        ("swe", "sv"),
        ("tam", "ta"),
        ("tel", "te"),
        ("tgl", "tl"),
        ("tha", "th"),
        ("tuk", "tk"),
        ("tur", "tr"),
        ("ukr", "uk"),
        ("urd", "ur"),
        ("uzb", "uz"),
        ("vie", "vi"),
        ("yid", "yi"),
        ("zul", "zu"),
    ];
    let code = lang.code();
    TABLE.iter().find(|(three, _)| *three == code).map(|(_, two)| *two)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_messages_are_told_apart() {
        for (text, tag) in [
            ("Bonjour, je voudrais changer la date de mon vol de demain matin, s'il vous plaît.", "fr"),
            ("Hello, I would like to change the date of my flight tomorrow morning, please.", "en"),
            ("Hola, quisiera cambiar la fecha de mi vuelo de mañana por la mañana, por favor.", "es"),
            ("Hallo, ich möchte bitte das Datum meines Fluges morgen früh ändern.", "de"),
            ("Olá, gostaria de alterar a data do meu voo de amanhã de manhã, por favor.", "pt"),
            ("Здравствуйте, я хотел бы изменить дату моего завтрашнего рейса.", "ru"),
            ("こんにちは、明日の朝のフライトの日付を変更したいです。", "ja"),
            ("My order has not arrived yet, can you check?", "en"),
            ("Mi pedido todavía no ha llegado, ¿pueden revisarlo?", "es"),
            ("Ma commande n'est pas encore arrivée, pouvez-vous vérifier ?", "fr"),
            ("Il mio ordine non è ancora arrivato, potete controllare?", "it"),
            ("Mijn bestelling is nog niet aangekomen", "nl"),
        ] {
            let d = detect(text).unwrap_or_else(|| panic!("no language for {text:?}"));
            assert_eq!(d.tag, tag, "{text}");
            assert!((0.0..=1.0).contains(&d.confidence));
        }
    }

    #[test]
    fn too_little_text_says_nothing() {
        // Including short messages whatlang gets wrong (Spanish, French and Danish guesses).
        for text in [
            "",
            "ok",
            "hi",
            "👍",
            "1234",
            "?!",
            "Bonjour",
            "thanks a lot",
            "I want a refund for my ticket",
            "Quiero un reembolso de mi billete",
            "Hola, necesito ayuda",
        ] {
            assert_eq!(detect(text), None, "{text:?}");
        }
    }

    #[test]
    fn every_language_whatlang_knows_has_a_tag() {
        for lang in whatlang::Lang::all() {
            assert!(iso_639_1(*lang).is_some(), "{lang:?} has no two-letter tag");
        }
    }
}
