//! The ceiling: a responder that does nothing but answer. It echoes each
//! payment request to its Response Topic with its Correlation Data, and acks
//! it after the reply is queued, in arrival order, as the daemon does. No
//! decode, no rules, no ledger: what the broker, the client library and the
//! machine allow at best.

use rumqttc::v5::Event;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use tokio::sync::{mpsc, watch};
use wasmpay::mqtt::EventLoop;

use crate::load::mqtt_options;

/// The requests the ceiling answers.
const SUBSCRIPTION: &str = "wasmpay/v1/users/+/pay";

/// Serves until `stop` turns true. `inflight_messages_max` is the receive
/// maximum and `packets_per_write_max` the writes' batch, the same as the
/// daemon's.
pub async fn run(
    address: String,
    client_id: String,
    inflight_messages_max: u16,
    packets_per_write_max: u16,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut options = mqtt_options(&client_id, &address)?;
    options
        .set_receive_maximum(Some(inflight_messages_max))
        .set_manual_acks(true);
    let capacity = usize::from(inflight_messages_max) + 16;
    let (client, mut eventloop) = EventLoop::new(options, capacity);
    eventloop.set_packets_per_write_max(packets_per_write_max);
    // As in the daemon: the event loop only forwards, and another task
    // publishes and acks, so a full request queue cannot deadlock the loop.
    let (tx, mut rx) = mpsc::channel::<Publish>(capacity);
    let replier_client = client.clone();
    let replier = tokio::spawn(async move {
        while let Some(publish) = rx.recv().await {
            if let Some(properties) = &publish.properties
                && let Some(topic) = &properties.response_topic
            {
                let reply = PublishProperties {
                    correlation_data: properties.correlation_data.clone(),
                    ..PublishProperties::default()
                };
                let _ = replier_client
                    .publish_with_properties(
                        topic.clone(),
                        QoS::AtLeastOnce,
                        false,
                        publish.payload.clone(),
                        reply,
                    )
                    .await;
            }
            let _ = replier_client.ack(&publish).await;
        }
    });
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.subscribe(SUBSCRIPTION, QoS::AtLeastOnce).await?;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if tx.send(publish).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => anyhow::bail!("ceiling lost the broker: {e}"),
            },
            _ = stop.changed() => break,
        }
    }
    drop(tx);
    let _ = replier.await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    Ok(())
}
