from mycelium_mono import I32, U32, U64, message


@message(type_id=39900, topic="soil")
class SoilReading:
    sensor_id: U32
    moisture_permille: U32
    temperature_dc: I32


@message(type_id=39901, topic="irrigation")
class IrrigationCommand:
    zone: U32
    litres: U64
