//! The demo: a workspace with two teams and agents of mixed presence and skills, and a
//! trickle of conversations so that a newcomer sees assignments, queueing and draining within
//! a minute of `usher serve --demo`.

use anyhow::Result;
use std::collections::BTreeMap;
use std::time::Duration;
use usher_core::model::{Channel, Presence, Priority, Strategy};
use usher_core::request::{Rules, WhenNobody};
use usher_server::now_millis;
use usher_store::{ConversationFilter, NewAgent, NewContact, NewConversation, NewTeam, Store};

/// The demo logins' password (every demo person has one: admin@demo.usher, ana@demo.usher, …).
pub const DEMO_PASSWORD: &str = "usher-demo";

/// Creates the demo teams and agents.
pub async fn seed(store: &Store, ws: i64) -> Result<()> {
    let now = now_millis();
    let team = |name: &str, strategy| NewTeam {
        name: name.into(),
        strategy,
        only_online: true,
        time_zone: "UTC".into(),
        when_nobody: WhenNobody::Queue,
        default_handle_seconds: 120,
    };
    let support = store.create_team(ws, &team("Support", Strategy::LeastOpen), now).await?;
    let sales = store.create_team(ws, &team("Sales", Strategy::RoundRobin), now).await?;
    // Name, teams, presence, cap, skills, languages.
    type Person<'a> = (&'a str, &'a [i64], Presence, u32, &'a [(&'a str, u8)], &'a [&'a str]);
    let people: [Person; 6] = [
        ("Ana", &[support.id], Presence::Online, 3, &[("billing", 4)], &["en", "pt"]),
        ("Ravi", &[support.id], Presence::Offline, 3, &[("tech", 5)], &["en", "hi"]),
        ("Bob", &[support.id], Presence::Online, 2, &[("tech", 3), ("billing", 2)], &["en", "fr"]),
        ("Chloé", &[support.id, sales.id], Presence::Busy, 3, &[("billing", 3)], &["fr", "en"]),
        ("Dmitri", &[sales.id], Presence::Online, 4, &[], &["en", "ru"]),
        ("Eve", &[sales.id], Presence::Online, 4, &[], &["en", "es"]),
    ];
    store.create_login(ws, "admin@demo.usher", DEMO_PASSWORD, usher_store::Role::Admin, None, now).await?;
    for (name, teams, status, max_open, skills, languages) in people {
        let new = NewAgent {
            name: name.into(),
            email: format!("{}@demo.usher", name.to_lowercase()),
            teams: teams.to_vec(),
            max_open,
            daily_limit: None,
            weight: 1,
            skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect::<BTreeMap<_, _>>(),
            languages: languages.iter().map(|l| l.to_string()).collect(),
            channel_caps: BTreeMap::new(),
            status,
        };
        let agent = store.create_agent(ws, &new, now).await?;
        store
            .create_login(ws, &new.email, DEMO_PASSWORD, usher_store::Role::Agent, Some(agent.id), now)
            .await?;
    }
    // A web-chat channel whose conversations a published workflow greets and routes to
    // Support: the page at /chat/KEY is a customer's side of it.
    let chat = usher_store::channels::NewChannel {
        kind: Channel::WebChat,
        name: "Website chat".into(),
        team: Some(support.id),
        outbound_url: None,
        reopen_minutes: None,
    };
    store.create_channel(ws, &chat, now).await?;
    let params = usher_workflow::templates::Params { team: Some(support.id), ..Default::default() };
    let mut greet = usher_workflow::templates::instantiate("least_open_online_only", &params)?;
    greet.name = "Website chat: greet, then least open contacts in Support".into();
    greet.channels = vec![Channel::WebChat];
    let draft = store.create_workflow(ws, &greet, now).await?;
    store.publish_workflow(ws, draft.id, now).await?;
    eprintln!("  Demo: teams Support (least open contacts) and Sales (round robin), six agents,");
    eprintln!("        a web-chat channel and a published workflow that greets and routes its visitors.");
    Ok(())
}

/// The demo's customer chat page, once the server listens at `base`.
pub async fn chat_url(store: &Store, ws: i64, base: &str) -> Option<String> {
    let channels = store.channels(ws).await.ok()?;
    let key = channels.into_iter().find_map(|c| c.public_key)?;
    Some(format!("{base}/chat/{key}"))
}

/// Opens a conversation every two seconds and closes the oldest open one every three,
/// printing each decision's explanation. Runs until the process stops.
pub async fn traffic(store: Store, ws: i64) {
    let channels =
        [Channel::Whatsapp, Channel::WebChat, Channel::Email, Channel::Instagram, Channel::Telegram];
    let names = ["Mia", "Noah", "Olivia", "Liam", "Zoe", "Yusuf", "Ines", "Kenji", "Lea", "Omar"];
    let mut tick: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        let teams = match store.teams(ws).await {
            Ok(t) if !t.is_empty() => t,
            _ => continue,
        };
        if tick % 2 == 0 {
            let i = (tick / 2) as usize;
            let team = &teams[i % teams.len()];
            let new = NewConversation {
                channel: channels[i % channels.len()],
                contact: NewContact {
                    external_id: format!("demo-{}", i % 25),
                    name: Some(names[i % names.len()].into()),
                    language: Some("en".into()),
                    tags: vec![],
                },
                message: Some("Hello, I need some help".into()),
                team: Some(team.id),
                agent: None,
                wait_for_agent: false,
                priority: if i % 7 == 0 { Priority::High } else { Priority::Normal },
                strategy: None,
                skills: vec![],
                match_language: false,
                prefer_previous_agent: true,
                rules: Rules::default(),
                when_nobody: None,
            };
            match store.open_conversation(ws, &new, None, now_millis()).await {
                Ok((c, _)) => {
                    let why = store
                        .trace(ws, c.id)
                        .await
                        .ok()
                        .and_then(|t| t.last().map(|d| d.explanation.clone()))
                        .unwrap_or_default();
                    eprintln!("  demo: conversation {} in {} -> {}", c.id, team.name, why);
                }
                Err(e) => eprintln!("  demo: could not open a conversation: {e}"),
            }
        }
        if tick % 3 == 0 {
            let filter = ConversationFilter {
                status: Some(usher_core::manual::Status::Assigned),
                limit: Some(1),
                ..Default::default()
            };
            if let Ok(list) = store.conversations(ws, &filter, now_millis()).await {
                if let Some(c) = list.first() {
                    // The agent answers before closing, so first response times fill in.
                    let answer = "Thanks for waiting! That is sorted now.";
                    let _ = store
                        .post_message(ws, c.id, usher_store::Author::Agent, c.assignee, answer, now_millis())
                        .await;
                    if store.close(ws, c.id, now_millis()).await.is_ok() {
                        let who = match c.assignee {
                            Some(a) => {
                                store.agent(ws, a, now_millis()).await.map(|a| a.name).unwrap_or_default()
                            }
                            None => String::new(),
                        };
                        eprintln!("  demo: conversation {} closed by {who}", c.id);
                    }
                }
            }
        }
    }
}
