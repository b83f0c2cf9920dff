//! Feeds arbitrary bytes to every MQTT payload decoder of oakestra-proto (what a worker or the
//! cluster reads from the broker) and to the topic parser.
//!
//! Properties: nothing panics; a payload that decodes encodes to bytes that decode again to an
//! equal value (numbers stay numbers, nothing is lost); a topic that parses prints as a topic
//! that parses to the same topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oakestra_proto::mqtt::*;
use std::fmt::Debug;

fn roundtrip<P: Payload + PartialEq + Debug>(data: &[u8]) {
    if let Ok(decoded) = P::from_bytes(data) {
        let again = P::from_bytes(&decoded.to_bytes()).expect("an encoded payload decodes");
        assert_eq!(
            again, decoded,
            "a payload changed on its way through the wire"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    roundtrip::<NodeInfo>(data);
    roundtrip::<JobStatusReport>(data);
    roundtrip::<ResourcesReport>(data);
    roundtrip::<DeployCommand>(data);
    roundtrip::<DeleteCommand>(data);
    roundtrip::<ControlError>(data);
    roundtrip::<SubnetRequest>(data);
    roundtrip::<SubnetResult>(data);
    roundtrip::<ServiceDeployed>(data);
    roundtrip::<TableQueryRequest>(data);
    roundtrip::<TableQueryResult>(data);
    roundtrip::<InterestRemove>(data);
    roundtrip::<LogsRequest>(data);
    roundtrip::<LogsReply>(data);
    if let Ok(cmd) = DeployCommand::from_bytes(data) {
        let _ = cmd.port_mappings();
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(topic) = text.parse::<Topic>()
    {
        let printed = topic.to_string();
        assert_eq!(printed.parse::<Topic>().as_ref(), Ok(&topic), "{printed}");
        let _ = topic.node_id();
    }
});
