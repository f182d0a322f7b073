"""Alert delivery channels fed by the outbox dispatcher, one module per channel.

Each implements ``ioc.alerting.notification.Channel``: ``deliver`` returns once the receiver
accepted the notification or raises ``DeliveryError`` (``retryable`` False when retrying
cannot help). Every channel is idempotent per ``notification_id``. A channel never knows about
another; the MQTT channel lives with the dispatcher.
"""
